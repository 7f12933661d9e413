"""Quickstart: the `tiny` model learns to cross FrozenLake (4x4, multi-turn) on a laptop CPU.

    jarl train                                   # this config is the default
    jarl train --config configs/quickstart.py --config.train.steps=20 --config.workdir=runs/qs

A short supervised warm start on BFS expert moves teaches the format and a rough
policy; GRPO then improves it from the env's reward alone. Expected on a 2-core CPU
(about 10 minutes): held-out greedy success goes from the warm start's level to
clearly above it (see README's results table; the run writes runs/quickstart/summary.json).
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.workdir = "runs/quickstart"
  c.tokenizer = "byte"
  c.model = ConfigDict(dict(preset="tiny"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.env = ConfigDict(dict(name="frozenlake", kwargs=ConfigDict(dict(size=4, max_turns=8))))
  c.agent = ConfigDict(dict(act_budget=6, act_header="> "))
  c.sampling = ConfigDict(dict(temperature=1.0))
  c.rollout = ConfigDict(dict(n_tasks=8, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip",
                           policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),
                           entropy_coef=0.0, kl_coef=0.0, epochs=1, minibatches=2, microbatches=1))
  c.optim = ConfigDict(dict(lr=2e-4, warmup_steps=5, schedule="constant", max_grad_norm=1.0))
  c.sft = ConfigDict(dict(episodes=256, steps=150, batch_size=32, lr=1e-3))
  c.eval = ConfigDict(dict(every=10, tasks=128))
  c.train = ConfigDict(dict(steps=60, checkpoint_every=10, keep_checkpoints=2, sample_episodes=4,
                            tensorboard=True, wandb_project=None))
  return c
