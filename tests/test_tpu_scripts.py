"""tpu/*.sh and slurm/train.sbatch without gcloud or SLURM: syntax, DRY_RUN=1 commands, the remote
launch command run on a fake worker, the sbatch script with a fake srun, and jax's SLURM detection."""

import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from jarl import distributed

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "tpu").glob("*.sh")) + [ROOT / "slurm" / "train.sbatch"]
RECIPE = "configs/recipes/qwen3_8b_v5p16.py"


def _run(args, env=None, check=True, cwd=ROOT):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "JARL_", "WORKDIR", "BUCKET", "QUEUED",
                                                                    "SPOT", "RUN", "SLURM_",
                                                                    # set by benchmarks/accelerator.py's import in
                                                                    # a neighbouring test: the scripts' defaults here
                                                                    "XLA_PYTHON_CLIENT_"))} | (env or {})
  out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
  if check:
    assert out.returncode == 0, out.stderr
  return out


def _dry(script, *args, **env):
  """The commands a tpu script prints with DRY_RUN=1, each split into its argv (comments skipped)."""
  out = _run([str(ROOT / "tpu" / script), *args], env=dict(DRY_RUN="1", **env))
  return [shlex.split(line) for line in out.stdout.splitlines() if line and not line.startswith("#")]


def _flag(argv, name):
  return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


def _check_remote(argv):
  """A worker's --command is valid bash."""
  assert subprocess.run(["bash", "-n", "-c", _flag(argv, "command")]).returncode == 0


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_syntax_and_usage(script):
  assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
  assert script.name == "common.sh" or os.access(script, os.X_OK)
  assert "\nset -euo pipefail\n" in script.read_text()
  first = script.read_text().splitlines()[:3]
  assert script.name == "common.sh" or first[0].startswith("#!") and first[1].startswith("# ")
  if script.name != "common.sh":
    out = _run(["bash", str(script)], check=False)  # no arguments: the header comment, exit 2
    assert out.returncode == 2 and ("Usage" in out.stderr or "slurm/train.sbatch" in out.stderr or
                                    script.stem in out.stderr)


def test_create():
  [argv] = _dry("create.sh", "jarl-v5p16", "v5p-16", TPU_ZONE="us-east5-a", TPU_PROJECT="proj")
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "jarl-v5p16"]
  assert {"--accelerator-type=v5p-16", "--version=v2-alpha-tpuv5", "--zone=us-east5-a", "--project=proj"} <= set(argv)
  [argv] = _dry("create.sh", "vm", "v5litepod-8", "--network=n", SPOT="1", QUEUED="1")
  assert argv[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "vm"]
  assert {"--node-id=vm", "--accelerator-type=v5litepod-8", "--runtime-version=v2-alpha-tpuv5-lite", "--spot",
          "--network=n"} <= set(argv)
  assert "--version=tpu-ubuntu2204-base" in _dry("create.sh", "vm", "v4-32")[0]
  assert _run([str(ROOT / "tpu/create.sh"), "vm", "v9-8"], env=dict(DRY_RUN="1"), check=False).returncode == 2


def test_install_copies_this_checkout_or_clones_and_mounts_a_bucket():
  scp, unpack, venv = _dry("install.sh", "vm")
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert scp[-2] == "vm:jarl-src.tgz"
  for argv in (unpack, venv):
    assert argv[4:6] == ["ssh", "vm"] and "--worker=all" in argv
    _check_remote(argv)
  assert 'uv venv --python 3.12 "$HOME/jarl-venv"' in _flag(venv, "command")
  assert '-e "$HOME/jarl[tpu]"' in _flag(venv, "command")
  clone, venv, mount = _dry("install.sh", "vm", JARL_REPO="https://example.com/jarl.git", JARL_REF="main",
                            BUCKET="gs://bk/runs", MOUNT="/mnt/x")
  for argv in (clone, venv, mount):
    assert "--worker=all" in argv
    _check_remote(argv)
  assert "git clone --depth 1 --branch main https://example.com/jarl.git" in _flag(clone, "command")
  assert "gcsfuse --implicit-dirs --rename-dir-limit=200000 --only-dir runs bk" in _flag(mount, "command")
  assert "M=/mnt/x" in _flag(mount, "command")


def test_launch_starts_the_config_on_every_worker():
  [argv] = _dry("launch.sh", "vm", RECIPE, "--config.train.steps=3", "--config.env.name=a b",
                WORKDIR="/mnt/jarl/q8", LIBTPU_INIT_ARGS="--x=1 --y=2", TPU_ZONE="z")
  assert argv[4:6] == ["ssh", "vm"] and "--worker=all" in argv and "--zone=z" in argv
  _check_remote(argv)
  command = _flag(argv, "command")
  assert "nohup" in command and '>"$HOME/jarl-logs/qwen3_8b_v5p16.log"' in command
  train = shlex.split(command.split("nohup ")[1].split(" >")[0])
  assert train == ["env", "LIBTPU_INIT_ARGS=--x=1 --y=2", "TOKENIZERS_PARALLELISM=false", "$HOME/jarl-venv/bin/jarl",
                   "train", "--config", RECIPE, "--config.workdir=/mnt/jarl/q8", "--config.train.steps=3",
                   "--config.env.name=a b"]
  out = _run([str(ROOT / "tpu/launch.sh"), "vm", RECIPE], env=dict(DRY_RUN="1", WORKDIR="gs://bk/x"), check=False)
  assert out.returncode == 2 and "mount the bucket" in out.stderr


def test_launch_command_runs_on_a_fake_worker(tmp_path):
  """The remote command itself, run by bash in a fake home: a background `jarl train` with the exact
  arguments, its log and pid files; a second launch is refused while it runs; stop.sh's command stops it."""
  home = tmp_path / "home"
  (home / "jarl").mkdir(parents=True)
  jarl = home / "jarl-venv" / "bin" / "jarl"
  jarl.parent.mkdir(parents=True)
  jarl.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$HOME/argv"; echo started; trap "exit 0" TERM\n'
                  'for i in $(seq 300); do sleep 0.1; done\n')
  jarl.chmod(0o755)
  [argv] = _dry("launch.sh", "vm", RECIPE, "--config.env.name=a b", "--resume", WORKDIR="/mnt/w", RUN="r1")
  env = dict(HOME=str(home), PATH=os.environ["PATH"])
  assert subprocess.run(["bash", "-c", _flag(argv, "command")], env=env, timeout=30).returncode == 0
  for _ in range(100):
    if (home / "argv").exists() and (home / "jarl-logs/r1.log").read_text():
      break
    subprocess.run(["sleep", "0.1"])
  assert (home / "argv").read_text().splitlines() == [
      "train", "--config", RECIPE, "--config.workdir=/mnt/w", "--config.env.name=a b", "--resume"]
  assert (home / "jarl-logs/r1.log").read_text() == "started\n"
  again = subprocess.run(["bash", "-c", _flag(argv, "command")], env=env, capture_output=True, text=True, timeout=30)
  assert again.returncode == 1 and "r1 is still running" in again.stderr
  [stop] = _dry("stop.sh", "vm", "r1")
  assert "--worker=all" in stop
  stopped = subprocess.run(["bash", "-c", _flag(stop, "command")], env=env, capture_output=True, text=True, timeout=30)
  assert "stopping r1" in stopped.stdout
  pid = int((home / "jarl-logs/r1.pid").read_text())
  for _ in range(100):
    if not os.path.exists(f"/proc/{pid}") or "Z" in pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]:
      break
    subprocess.run(["sleep", "0.1"])
  else:
    os.kill(pid, 9)
    raise AssertionError("the run did not stop on SIGTERM")


def test_logs_and_delete():
  [argv] = _dry("logs.sh", "vm")
  assert "--worker=0" in argv and _flag(argv, "command").startswith("tail -n 100 -F")
  _check_remote(argv)
  [argv] = _dry("logs.sh", "vm", "qwen3_8b_v5p16", "1", LOG_LINES="10")
  assert "--worker=1" in argv and _flag(argv, "command") == 'tail -n 10 -F "$HOME/jarl-logs/qwen3_8b_v5p16.log"'
  assert _dry("delete.sh", "vm")[0] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "vm", "--quiet"]
  assert _dry("delete.sh", "vm", QUEUED="1")[0][3:5] == ["queued-resources", "delete"]


def _sbatch_lines():
  return [line for line in (ROOT / "slurm/train.sbatch").read_text().splitlines() if line.startswith("#SBATCH")]


def test_sbatch_asks_for_one_task_per_gpu():
  lines = _sbatch_lines()
  assert "#SBATCH --ntasks-per-node=8" in lines and "#SBATCH --gpus-per-node=8" in lines
  assert not any("gpus-per-task" in line or "gpu-bind" in line for line in lines)  # each task sees all GPUs


def test_sbatch_runs_srun_with_the_gpu_environment(tmp_path):
  """Real mode with a fake srun: the prefetch (nothing to fetch for a byte tokenizer) and the srun line."""
  fake = tmp_path / "bin"
  fake.mkdir()
  (fake / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_OUT"\n'
                             'echo "$XLA_FLAGS|$XLA_PYTHON_CLIENT_MEM_FRACTION" >> "$SRUN_OUT"\n')
  (fake / "srun").chmod(0o755)
  record = tmp_path / "srun.txt"
  env = dict(PATH=f"{fake}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}", SRUN_OUT=str(record),
             WORKDIR="/shared/runs/x", SLURM_JOB_NUM_NODES="2", SLURM_NTASKS_PER_NODE="8", XLA_FLAGS="")
  out = _run(["bash", str(ROOT / "slurm/train.sbatch"), "configs/quickstart.py", "--config.train.steps=2"], env=env)
  assert "jarl: 2 nodes x 8 tasks" in out.stdout
  *argv, xla = record.read_text().splitlines()
  assert argv == ["--kill-on-bad-exit=1", "--cpu-bind=none", "jarl", "train", "--config", "configs/quickstart.py",
                  "--config.workdir=/shared/runs/x", "--config.train.steps=2"]
  flags, fraction = xla.split("|")
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in flags and fraction == "0.95"
  # every XLA flag the script sets exists in this jaxlib (XLA aborts on an unknown one)
  check = _run([sys.executable, "-c", "import jax.numpy as jnp; jnp.ones(1).block_until_ready()"],
               env=dict(XLA_FLAGS=flags, JAX_PLATFORMS="cpu"), check=False)
  assert check.returncode == 0, check.stderr
  dry = _run(["bash", str(ROOT / "slurm/train.sbatch"), RECIPE], env=dict(DRY_RUN="1"))
  assert f"prefetch {RECIPE}" in dry.stdout and f"jarl train --config {RECIPE}" in dry.stdout


def test_jax_reads_the_slurm_step_by_itself(monkeypatch):
  """What srun sets is all jax.distributed.initialize() needs: no coordinator flags or JARL_* variables."""
  from jax._src.clusters import SlurmCluster
  for name in ("OMPI_MCA_orte_hnp_uri", "PMIX_NAMESPACE", "JARL_COORDINATOR"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("SLURM_JOB_ID", "4242")
  monkeypatch.setenv("SLURM_NTASKS", "16")
  monkeypatch.setenv("SLURM_PROCID", "9")
  monkeypatch.setenv("SLURM_LOCALID", "1")
  monkeypatch.setenv("SLURM_STEP_NUM_NODES", "2")
  assert distributed.detected_cluster() is None  # the batch script itself (outside srun) is no step
  monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[007-008]")
  assert distributed.detected_cluster() == ("SlurmCluster", 16)
  assert SlurmCluster.get_process_id() == 9 and SlurmCluster.get_local_process_id() == 1  # GPU 1 of its node
  assert SlurmCluster.get_coordinator_address(None, None) == f"gpu007:{4242 % 4096 + 61440}"
