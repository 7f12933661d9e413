"""What every process of tests/test_multihost.py runs: a tiny `jarl train` config.

    python -m jarl.cli train --config tests/multihost_worker.py --config.workdir=DIR \
        --coordinator=127.0.0.1:PORT --num_processes=2 --process_id=0

Loading this file registers the toy env (guess_digit). The mesh needs 4 devices in all:
data=2 x fsdp=2, so parameters and optimizer moments are sharded across processes too.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))
import quickstart  # noqa: E402
import toy_env  # noqa: E402,F401  (registers guess_digit)


def get_config():
  c = quickstart.get_config()
  c.workdir = "runs/multihost"
  c.model.overrides = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, mlp_dim=64)
  c.mesh = dict(data=2, fsdp=2, tensor=1)
  c.env.name = "guess_digit"
  c.env.kwargs = dict(max_turns=2)
  c.agent.act_budget = 2
  c.rollout.n_tasks, c.rollout.group_size = 2, 4
  c.sft.episodes, c.sft.steps, c.sft.batch_size = 16, 2, 8
  c.eval.every, c.eval.tasks = 2, 8
  c.train.steps, c.train.checkpoint_every = 2, 2
  c.train.tensorboard = False
  c.algo.entropy_coef, c.algo.filter_zero_variance = 0.01, False  # RL updates with a gradient (the groups tie)
  return c
