#!/usr/bin/env bash
# Put jarl on every worker of a TPU VM: the code, a Python 3.12 virtualenv with jarl[tpu] (editable),
# and optionally a Cloud Storage bucket mounted at the same path on each, for a shared workdir.
#
#   tpu/install.sh NAME                                     # copies this checkout (git's tracked and
#                                                           # untracked, not ignored, files)
#   JARL_REPO=https://github.com/you/jarl.git tpu/install.sh NAME    # or clones (JARL_REF: a branch)
#   BUCKET=gs://my-bucket tpu/install.sh NAME               # and mounts it at /mnt/jarl (MOUNT=...)
#
# Run it again after changing the code: it updates the files and the install. The VM image's Python
# is 3.10 and jarl needs 3.11+, so uv makes the virtualenv with its own Python 3.12. BUCKET is mounted
# with gcsfuse (directory renames on, which orbax's checkpoints use); the TPU VM's service account
# needs read and write access to it. Settings and DRY_RUN=1: tpu/common.sh.

set -euo pipefail
source "$(dirname "$0")/common.sh"

[[ $# -eq 1 && "$1" != -* ]] || usage 2
NAME=$1
DIR=$(remote "$JARL_DIR")
VENV=$(remote "$JARL_VENV")
MOUNT=${MOUNT:-/mnt/jarl}

# 1. the code
if [[ -n "${JARL_REPO:-}" ]]; then
  on_workers "$NAME" all "$(script 'set -e' \
    "if [ -d \"$DIR/.git\" ]; then git -C \"$DIR\" fetch --depth 1 origin $(quote "${JARL_REF:-HEAD}")" \
    "git -C \"$DIR\" reset --hard FETCH_HEAD" \
    "else git clone --depth 1 ${JARL_REF:+--branch $(quote "$JARL_REF") }$(quote "$JARL_REPO") \"$DIR\"" 'fi')"
else
  git -C "$JARL_ROOT" rev-parse --git-dir >/dev/null 2>&1 || die "$JARL_ROOT is not a git checkout: set JARL_REPO"
  TARBALL=${TMPDIR:-/tmp}/jarl-src-$$.tgz
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "# pack: git -C $(quote "$JARL_ROOT") ls-files -co --exclude-standard | tar -czf $TARBALL -T -"
  else
    trap 'rm -f "$TARBALL" "$TARBALL.list"' EXIT
    (cd "$JARL_ROOT" && git ls-files -co --exclude-standard | while IFS= read -r f; do
      if [[ -e "$f" ]]; then echo "$f"; fi
    done) >"$TARBALL.list"
    tar -czf "$TARBALL" -C "$JARL_ROOT" -T "$TARBALL.list"
  fi
  gcloud_tpu tpu-vm scp "$TARBALL" "$NAME:jarl-src.tgz" --worker=all
  on_workers "$NAME" all "$(script 'set -e' "mkdir -p \"$DIR\"" "tar -xzf jarl-src.tgz -C \"$DIR\"" \
    'rm jarl-src.tgz')"
fi

# 2. the virtualenv with jarl[tpu]
UV_INSTALL='python3 -m pip install --user --quiet uv || curl -LsSf https://astral.sh/uv/install.sh | sh'
on_workers "$NAME" all "$(script 'set -e' 'export PATH="$HOME/.local/bin:$PATH"' \
  "command -v uv >/dev/null || $UV_INSTALL" \
  "[ -x \"$VENV/bin/python\" ] || uv venv --python 3.12 \"$VENV\"" \
  "uv pip install --quiet --python \"$VENV/bin/python\" -e \"$DIR[tpu]\"" \
  "\"$VENV/bin/python\" -c 'import jax, jarl; print(\"jarl installed, jax\", jax.__version__)'")"

# 3. the bucket, at the same path on every worker
if [[ -n "${BUCKET:-}" ]]; then
  BUCKET_PATH=${BUCKET#gs://}
  BUCKET_NAME=${BUCKET_PATH%%/*}
  ONLY_DIR=${BUCKET_PATH#"$BUCKET_NAME"}
  ONLY_DIR=${ONLY_DIR#/}
  APT=https://packages.cloud.google.com/apt KEY=/usr/share/keyrings/cloud.google.asc
  REPO="deb [signed-by=$KEY] $APT gcsfuse-\$(lsb_release -cs) main"
  MOUNT_CMD="gcsfuse --implicit-dirs --rename-dir-limit=200000 ${ONLY_DIR:+--only-dir $(quote "$ONLY_DIR") }"
  MOUNT_CMD+="$(quote "$BUCKET_NAME") \"\$M\""
  on_workers "$NAME" all "$(script 'set -e' "M=$(quote "$MOUNT")" \
    "if ! command -v gcsfuse >/dev/null; then echo \"$REPO\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list" \
    "curl -fsSL $APT/doc/apt-key.gpg | sudo tee $KEY >/dev/null" \
    'sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; fi' \
    'sudo mkdir -p "$M" && sudo chown "$USER" "$M"' "mountpoint -q \"\$M\" || $MOUNT_CMD")"
fi
