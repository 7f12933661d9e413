"""Multi-host `jarl train`: 2 local processes (jax.distributed over localhost, gloo CPU
collectives) on one global 4-device mesh reproduce a single-process run: the same metrics,
the same checkpointed TrainState, and only process 0 writes. Process 0 takes its cluster layout
from flags, process 1 from JARL_* environment variables.

Every run is `python -m jarl.cli train --config tests/multihost_worker.py` in a subprocess
that sees 4 / n_processes fake CPU devices.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import multihost_worker
from jarl import learner, train
from jarl.checkpoint import Checkpointer
from jarl.metrics import read_jsonl

REPO = pathlib.Path(__file__).resolve().parent.parent
GLOBAL_DEVICES = 4
TIMEOUT_S = 600  # a loaded 2-core machine (the suite beside other work) took over 300 s


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir: pathlib.Path, n_processes: int, use_env: bool = False) -> list[str]:
  """Run the tiny config on `n_processes` processes; their outputs, in process order.

  Cluster layout by flags, or, with `use_env`, by JARL_* environment variables in odd-numbered processes. A process
  that fails or a run past TIMEOUT_S kills the others; none outlives this call.
  """
  env = {k: v for k, v in os.environ.items() if not k.startswith("JARL_")}
  env.update(JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={GLOBAL_DEVICES // n_processes} "
                       "--xla_backend_optimization_level=0",  # compiles 2x faster; every run uses it
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  command = [sys.executable, "-m", "jarl.cli", "train", "--config", str(REPO / "tests" / "multihost_worker.py"),
             f"--config.workdir={workdir}"]
  port = _free_port()
  logs = [workdir.parent / f"{workdir.name}.process{i}.log" for i in range(n_processes)]
  procs, failed, timed_out = [], [], False
  try:
    for i, log in enumerate(logs):
      layout = {}
      if n_processes > 1:
        layout = dict(coordinator=f"127.0.0.1:{port}", num_processes=n_processes, process_id=i)
      if use_env and i % 2:
        flags, process_env = [], dict(env, **{f"JARL_{k.upper()}": str(v) for k, v in layout.items()})
      else:
        flags, process_env = [f"--{k}={v}" for k, v in layout.items()], env
      with open(log, "w") as out:
        procs.append(subprocess.Popen(command + flags, cwd=REPO, env=process_env, stdout=out,
                                      stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs):
      failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
      timed_out = time.monotonic() > deadline
      if failed or timed_out:
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  outputs = [log.read_text() for log in logs]
  bad = failed + [i for i, p in enumerate(procs) if p.returncode and i not in failed]  # the first failures first
  report = [f"process {i}/{n_processes} exited with {procs[i].returncode}:\n{outputs[i][-3000:]}" for i in bad]
  assert not bad, "\n".join([f"timed out after {TIMEOUT_S} s"] * timed_out + report)
  return outputs


def final_state(workdir: pathlib.Path):
  """The run's last checkpoint, restored onto this test process's 8-device mesh."""
  config = multihost_worker.get_config()
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  run = train.build(config)
  target = learner.init_state(run.lm, run.optim, seed=config.seed, reference=run.algo.kl_coef > 0)
  ckpt = Checkpointer(workdir / "checkpoints")
  state, _ = ckpt.restore(target)
  ckpt.close()
  return state


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("multihost") / "one_process"
  launch(workdir, 1)
  return workdir


def test_processes_reproduce_one_process_run(reference, tmp_path):
  n_processes = 2  # (4 processes ran the same code path at twice the cost on a 2-core CI machine)
  workdir = tmp_path / f"{n_processes}_processes"
  outputs = launch(workdir, n_processes, use_env=True)

  want, got = read_jsonl(reference / "metrics.jsonl"), read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in got] == [r["step"] for r in want] == [-1, 0, 0, 1, 2]
  assert all(r["policy/grad_norm"] > 0 for r in want if r["step"] > 0)  # RL updates that change the params
  for w, g in zip(want, got):
    assert set(g) == set(w)
    np.testing.assert_allclose([g[k] for k in sorted(w)], [w[k] for k in sorted(w)], rtol=1e-5, atol=1e-6,
                               err_msg=f"step {w['step']}: {sorted(w)}")
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["steps"] == 2 and summary["final_eval"] == json.loads((reference / "summary.json").read_text())[
      "final_eval"]

  want_state, got_state = final_state(reference), final_state(workdir)
  assert int(got_state.step) == 2
  for w, g in zip(jax.tree.leaves(want_state), jax.tree.leaves(got_state), strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
  checksum = lambda s: sum(float(np.abs(np.asarray(x, np.float64)).sum()) for x in jax.tree.leaves(s.params))
  assert checksum(got_state) == pytest.approx(checksum(want_state), rel=1e-6)

  # only process 0 logs, shows progress and prints the summary; all wrote their checkpoint shards
  assert '"final_eval"' in outputs[0] and "rl:" in outputs[0]
  assert all('"final_eval"' not in out and "rl:" not in out for out in outputs[1:])
  assert {p.name for p in workdir.iterdir()} == {"checkpoints", "metrics.jsonl", "curves.png", "samples.txt",
                                                 "summary.json"}
