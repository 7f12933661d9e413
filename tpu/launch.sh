#!/usr/bin/env bash
# Start `jarl train` on every worker of a TPU VM in the background, each logging to its own file.
#
#   tpu/launch.sh NAME CONFIG [--config.key=value ... | --resume | --overwrite]
#   WORKDIR=/mnt/jarl/q8 tpu/launch.sh jarl-v5p16 configs/recipes/qwen3_8b_v5p16.py
#   tpu/launch.sh jarl-v5e configs/quickstart.py --config.train.steps=10
#
# Every worker runs the same command: `jarl train` is one multi-controller JAX program, and on a
# multi-host slice jax.distributed.initialize() finds the other workers from the TPU metadata (no
# coordinator flags). CONFIG is a path in the checkout tpu/install.sh put on the workers. WORKDIR
# sets --config.workdir: on a multi-host slice a path every worker sees, such as the bucket
# install.sh mounts at /mnt/jarl (a gs:// URL does not work: jarl writes with local file APIs).
# Each worker writes LOG_DIR/RUN.log and RUN.pid (RUN: the config file's name, or RUN=...);
# tpu/logs.sh follows a log, tpu/stop.sh stops the run (a checkpoint is saved; --resume continues).
# JARL_ENV names local variables to pass on (default "LIBTPU_INIT_ARGS HF_TOKEN WANDB_API_KEY",
# those that are set). Settings and DRY_RUN=1: tpu/common.sh.

set -euo pipefail
source "$(dirname "$0")/common.sh"

[[ $# -ge 2 && "$1" != -* ]] || usage 2
NAME=$1 CONFIG=$2
shift 2
RUN=${RUN:-$(basename "$CONFIG" .py)}
plain RUN "$RUN"
DIR=$(remote "$JARL_DIR")
LOGS=$(remote "$LOG_DIR")

ARGS=(--config "$CONFIG")
[[ -n "${WORKDIR:-}" ]] && ARGS+=("--config.workdir=$WORKDIR")
ARGS+=("$@")
for arg in "${ARGS[@]}"; do
  if [[ "$arg" == --config.workdir=gs://* ]]; then
    die "a gs:// workdir does not work (jarl writes with local file APIs): mount the bucket with" \
      "BUCKET=${arg#--config.workdir=} tpu/install.sh $NAME and use WORKDIR=/mnt/jarl/..."
  fi
done
[[ -f "$JARL_ROOT/$CONFIG" || -n "${JARL_REPO:-}" ]] || echo "warning: $CONFIG is not in this checkout" >&2

ENV=()
for var in ${JARL_ENV:-LIBTPU_INIT_ARGS HF_TOKEN WANDB_API_KEY}; do
  [[ -n "${!var:-}" ]] && ENV+=("$var=${!var}")
done

TRAIN="$(quote_all env "${ENV[@]}" TOKENIZERS_PARALLELISM=false) \"$(remote "$JARL_VENV")/bin/jarl\" train"
TRAIN+=" $(quote_all "${ARGS[@]}")"
on_workers "$NAME" all "$(script 'set -e' "cd \"$DIR\"" "mkdir -p \"$LOGS\"" \
  "if [ -f \"$LOGS/$RUN.pid\" ] && kill -0 \$(cat \"$LOGS/$RUN.pid\") 2>/dev/null; then \
echo \"$RUN is still running on \$(hostname): tpu/stop.sh $NAME $RUN\" >&2; exit 1; fi" \
  "nohup $TRAIN >\"$LOGS/$RUN.log\" 2>&1 </dev/null & echo \$! >\"$LOGS/$RUN.pid\"" \
  "echo \"\$(hostname): started $RUN, log $LOG_DIR/$RUN.log\"")"
