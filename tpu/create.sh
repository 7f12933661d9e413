#!/usr/bin/env bash
# Create a TPU VM or pod slice.
#
#   tpu/create.sh NAME ACCELERATOR_TYPE [gcloud flags ...]
#   tpu/create.sh jarl-v5e v5litepod-8
#   SPOT=1 TPU_ZONE=us-east5-a tpu/create.sh jarl-v5p16 v5p-16
#   QUEUED=1 tpu/create.sh jarl-v4 v4-32          # a queued resource: waits in line for capacity
#
# ACCELERATOR_TYPE: v4-8, v4-16, v4-32, ... (v4-N has N/2 chips), v5litepod-1/4/8/16/... (v5e),
# v5p-8, v5p-16, ... (v5p-N has N/2 chips), v6e-1/4/8/16/... The software version defaults to
# the one Google lists for JAX on that generation (TPU_VERSION overrides it). SPOT=1 asks for
# Spot capacity (cheaper, preemptible); QUEUED=1 creates a queued resource of the same name
# (see its state with `gcloud compute tpus queued-resources describe NAME`). Settings and
# DRY_RUN=1: tpu/common.sh.

set -euo pipefail
source "$(dirname "$0")/common.sh"

[[ $# -ge 2 && "$1" != -* ]] || usage 2
NAME=$1 ACCELERATOR=$2
shift 2

default_version() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "unknown accelerator type $1: give TPU_VERSION" ;;
  esac
}
VERSION=${TPU_VERSION:-$(default_version "$ACCELERATOR")}
SPOT_FLAG=()
[[ "${SPOT:-0}" == 1 ]] && SPOT_FLAG=(--spot)

if [[ "${QUEUED:-0}" == 1 ]]; then
  gcloud_tpu queued-resources create "$NAME" --node-id="$NAME" --accelerator-type="$ACCELERATOR" \
    --runtime-version="$VERSION" "${SPOT_FLAG[@]}" "$@"
else
  gcloud_tpu tpu-vm create "$NAME" --accelerator-type="$ACCELERATOR" --version="$VERSION" \
    "${SPOT_FLAG[@]}" "$@"
fi
