#!/usr/bin/env bash
# Delete a TPU VM (or the queued resource that holds it, with QUEUED=1). Files on the workers are lost;
# a mounted bucket keeps the run's workdir.
#
#   tpu/delete.sh NAME
#   QUEUED=1 tpu/delete.sh jarl-v4
#
# Asks no questions (--quiet). Settings and DRY_RUN=1: tpu/common.sh.

set -euo pipefail
source "$(dirname "$0")/common.sh"

[[ $# -eq 1 && "$1" != -* ]] || usage 2
NAME=$1
if [[ "${QUEUED:-0}" == 1 ]]; then
  gcloud_tpu queued-resources delete "$NAME" --force --quiet
else
  gcloud_tpu tpu-vm delete "$NAME" --quiet
fi
