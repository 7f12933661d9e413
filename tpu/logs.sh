#!/usr/bin/env bash
# Follow the log of a run on one worker of a TPU VM (Ctrl-C stops following, not the run).
#
#   tpu/logs.sh NAME [RUN] [WORKER]
#   tpu/logs.sh jarl-v5p16                        # worker 0's newest log
#   tpu/logs.sh jarl-v5p16 qwen3_8b_v5p16 1       # worker 1's log of that run
#
# RUN is the name tpu/launch.sh gave the run (the config file's name); without it, the newest log.
# Process 0 (worker 0) writes the progress bar and the metrics; other workers log only warnings and
# errors. LOG_LINES=N shows that many lines first (default 100; not LINES, which shells set). Settings and DRY_RUN=1: tpu/common.sh.

set -euo pipefail
source "$(dirname "$0")/common.sh"

[[ $# -ge 1 && $# -le 3 && "$1" != -* ]] || usage 2
NAME=$1 RUN=${2:-} WORKER=${3:-0}
[[ -z "$RUN" ]] || plain RUN "$RUN"
[[ "$WORKER" =~ ^[0-9]+$ ]] || die "WORKER must be a worker index (0, 1, ...), got $WORKER"
LOGS=$(remote "$LOG_DIR")
if [[ -n "$RUN" ]]; then
  LOG="\"$LOGS/$RUN.log\""
else
  LOG="\"\$(ls -t \"$LOGS\"/*.log | head -n 1)\""
fi
on_workers "$NAME" "$WORKER" "tail -n ${LOG_LINES:-100} -F $LOG"
