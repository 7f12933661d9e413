#!/usr/bin/env bash
# Stop a run on every worker of a TPU VM: SIGTERM to the process tpu/launch.sh started.
#
#   tpu/stop.sh NAME RUN
#   tpu/stop.sh jarl-v5p16 qwen3_8b_v5p16
#
# jarl train saves a checkpoint when any process gets SIGTERM and all of them exit; continue the run
# with tpu/launch.sh NAME CONFIG --resume (same WORKDIR). Settings and DRY_RUN=1: tpu/common.sh.

set -euo pipefail
source "$(dirname "$0")/common.sh"

[[ $# -eq 2 && "$1" != -* ]] || usage 2
NAME=$1 RUN=$2
plain RUN "$RUN"
PID="$(remote "$LOG_DIR")/$RUN.pid"
on_workers "$NAME" all "$(script "if [ -f \"$PID\" ] && kill -0 \$(cat \"$PID\") 2>/dev/null" \
  "then kill -TERM \$(cat \"$PID\") && echo \"\$(hostname): stopping $RUN\"" \
  "else echo \"\$(hostname): $RUN is not running\"; fi")"
