# Shared by the tpu/*.sh scripts (sourced, not run): settings from the environment, `run`, and
# ssh / scp to the TPU VM's workers.
#
#   TPU_ZONE      zone of the TPU VM (default: gcloud's compute/zone; e.g. us-central2-b has v4,
#                 us-east5-a v5p, us-west4-a v5e: see `gcloud compute tpus accelerator-types list`)
#   TPU_PROJECT   project (default: gcloud's core/project)
#   JARL_DIR      the checkout on every worker (default jarl; relative paths are under the worker's home)
#   JARL_VENV     the virtualenv on every worker (default jarl-venv)
#   LOG_DIR       the logs on every worker (default jarl-logs)
#   QUEUED=1      the TPU VM is (to be) a queued resource named like the VM
#   DRY_RUN=1     print every gcloud command, one shell-quoted line each, instead of running it

set -euo pipefail

TPU_ZONE=${TPU_ZONE:-${ZONE:-}}
TPU_PROJECT=${TPU_PROJECT:-}
JARL_DIR=${JARL_DIR:-jarl}
JARL_VENV=${JARL_VENV:-jarl-venv}
LOG_DIR=${LOG_DIR:-jarl-logs}
JARL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)  # this checkout

usage() {  # print the calling script's header comment (line 2 to the first blank line); exit $1
  if [[ "${1:-0}" == 0 ]]; then
    sed -n '2,/^$/{s/^# \{0,1\}//;p;}' "$0"
  else
    sed -n '2,/^$/{s/^# \{0,1\}//;p;}' "$0" >&2
  fi
  exit "${1:-0}"
}

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

plain() {  # plain WHAT VALUE: die unless VALUE is a plain name (it goes into remote commands)
  [[ "$2" =~ ^[A-Za-z0-9_.-]+$ ]] || die "$1 must be a plain name (letters, digits, _ . -), got '$2'"
}

quote() {  # one argument as a shell reads it back: bare when safe, else single-quoted
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {  # the arguments as one shell-quoted line
  local out=() arg
  for arg in "$@"; do out+=("$(quote "$arg")"); done
  echo "${out[*]}"
}

script() {  # shell commands joined into one line, for a worker's --command
  local out=$1
  shift
  for line in "$@"; do out+="; $line"; done
  echo "$out"
}

run() {  # run a command, or print it when DRY_RUN=1
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    quote_all "$@"
  else
    "$@"
  fi
}

remote() {  # a worker path for a remote command, inside double quotes: $HOME/PATH unless absolute
  if [[ "$1" == /* ]]; then echo "$1"; else echo "\$HOME/$1"; fi
}

gcloud_tpu() {  # gcloud compute tpus SUBCOMMAND ... with the zone and project
  run gcloud compute tpus "$@" ${TPU_ZONE:+--zone="$TPU_ZONE"} ${TPU_PROJECT:+--project="$TPU_PROJECT"}
}

on_workers() {  # on_workers NAME WORKER COMMAND: run a shell command on one worker (0, 1, ...) or all
  gcloud_tpu tpu-vm ssh "$1" --worker="$2" --command="$3"
}
