"""Quickstart: the `tiny` model learns to cross FrozenLake (4x4, multi-turn) on a laptop CPU.

    jarl train                                   # this config is the default
    jarl train --config configs/quickstart.py --config.seed=1 --config.workdir=runs/qs1

A short supervised warm start on BFS expert moves teaches the format and a rough policy;
GRPO then trains on the env's reward alone: 8 boards x 8 samples per iteration, sampled
at temperature 1.5 (the warm-started policy is nearly deterministic, so at temperature 1
most groups have no variance and teach nothing), groups with no variance filtered out.
Expect on a 2-core CPU (3 seeds, `python benchmarks/quickstart.py`, results in
benchmarks/results/quickstart.json): 4-10 minutes alone; held-out greedy success on
256 boards 47-55% after the warm start and 62-71% after 60 RL iterations (+15 to +18 points
on this CPU type; another CPU type gave seed 0 +10: XLA's float reductions differ).
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0  # params, tasks and sampling
  c.workdir = "runs/quickstart"  # metrics, checkpoints, curves.png, samples.txt, summary.json
  c.tokenizer = "byte"  # "byte", an HF tokenizer name / folder, or "package:NAME"
  c.model = ConfigDict(dict(
      preset="tiny",  # a built-in architecture (jarl/models/config.py); or hf_path= a checkpoint
  ))
  c.mesh = ConfigDict(dict(
      data=-1,  # devices splitting the batch (-1: all that are left)
      fsdp=1,  # devices splitting params, gradients and optimizer state
      tensor=1,  # devices splitting heads, MLP and vocabulary
  ))
  c.env = ConfigDict(dict(
      name="frozenlake",  # a registered env (jarl.envs.registered()), or rg:<dataset> for reasoning-gym
      module="",  # a .py file (or dotted module) imported first, for the envs it registers (README)
      kwargs=ConfigDict(dict(size=4, max_turns=6)),  # the env's __init__ arguments
  ))
  # No instruction text: a from-scratch byte model learns the format from the warm start, and
  # every token costs on a CPU.
  c.agent = ConfigDict(dict(
      act_budget=6,  # sampled tokens per action, the stop token included
      act_header="> ",  # forced before each action
      system="",  # instructions before the first observation
  ))
  c.sampling = ConfigDict(dict(
      temperature=1.5,  # rollout sampling temperature
  ))
  c.rollout = ConfigDict(dict(
      n_tasks=8,  # tasks per iteration
      group_size=8,  # samples per task (GRPO's group)
  ))
  c.algo = ConfigDict(dict(
      advantage="grpo",  # a registered estimator (jarl/algos/advantages.py): grpo, rloo, gae, ...
      policy_loss="ppo_clip",  # ppo_clip or gspo
      policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),  # clip-higher
      entropy_coef=0.0,  # entropy bonus
      kl_coef=0.0,  # KL to the reference policy (0: no reference forward)
      kl_estimator="k3",  # k1, k2 or k3
      filter_zero_variance=True,  # drop groups whose rewards are all equal
      epochs=1,  # passes over each batch
      minibatches=2,  # optimizer steps per epoch
      microbatches=1,  # gradient accumulation per minibatch
  ))
  c.optim = ConfigDict(dict(
      lr=1e-4,  # AdamW learning rate
      warmup_steps=5,  # linear warmup
      schedule="constant",  # constant, cosine or linear (after the warmup)
      max_grad_norm=1.0,  # gradient clipping
  ))
  c.sft = ConfigDict(dict(
      episodes=256,  # expert episodes for the warm start
      steps=60,  # warm-start steps (0: none)
      batch_size=16,  # episodes per warm-start step
      lr=1e-3,  # warm-start learning rate
  ))
  c.eval = ConfigDict(dict(
      every=10,  # RL steps between held-out evaluations
      tasks=256,  # held-out tasks, greedy
  ))
  c.train = ConfigDict(dict(
      steps=60,  # RL iterations
      checkpoint_every=10,  # RL steps between checkpoints
      keep_checkpoints=2,  # latest checkpoints kept (plus the best)
      sample_episodes=4,  # decoded episodes in samples.txt
      tensorboard=True,  # write tensorboard/
      wandb_project=None,  # a Weights & Biases project to log to
  ))
  return c
