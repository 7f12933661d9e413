"""Reference results: the `tiny` model on every built-in environment, warm start then GRPO.

    jarl train --config configs/reference.py:countdown          # one env (default: frozenlake)
    python benchmarks/reference.py                               # every env x seeds 0 1 2

Each env runs in a small instance that a from-scratch byte-level `tiny` model can learn on a
2-core CPU in a few minutes: a supervised warm start on the env's expert (solver) traces
teaches the answer format and a rough policy, then GRPO trains on the env's reward alone
(8 tasks x 8 samples per iteration at temperature 1.5, zero-variance groups filtered out),
with held-out greedy evaluation before RL and at the end. The README's table of reference
results and benchmarks/results/reference.md come from `python benchmarks/reference.py`.

The instances (see `ENVS`): frozenlake 4x4 in 6 turns; countdown with 3 numbers up to 10 and
2 tries; sort_repair of 4 numbers below 20 with 2 tries; mastermind with 3 digits from 1-4 in
6 guesses; path_star of degree 3 with arms of 2 nodes; sokoban 6x6 (a 4x4 floor) with one box 4 pulls from
its target, 8 moves; bandit_series with 2 arms, 2 rounds of 4 pulls (warm start on the oracle
expert, which reads the hidden payout probabilities); subgoal_maze 5x5 with
up to 2 moves per turn, 6 turns (no PLAN segment: the goal-setting experiment is separate).
"""

from ml_collections import ConfigDict

# env name: (env kwargs, act_budget, warm-start (episodes, steps))
ENVS = {
    "frozenlake": (dict(size=4, max_turns=6), 6, (256, 60)),
    "countdown": (dict(n_numbers=3, max_number=10, max_target=30, max_turns=2, action_len=12), 12, (512, 120)),
    "sort_repair": (dict(n=4, max_value=20, max_turns=2), 14, (512, 120)),
    "mastermind": (dict(length=3, colors=4, max_turns=6, action_len=4), 4, (256, 80)),
    "path_star": (dict(degree=3, arm_length=2, max_label=20), 10, (1024, 300)),
    "sokoban": (dict(size=6, reverse_steps=4, max_turns=8, action_len=6), 6, (256, 80)),
    # expert="oracle": the reference row predates the explore-then-commit expert; benchmarks/adaptation.py
    # runs this recipe with it (the env's default), which the policy can imitate from its context.
    "bandit_series": (dict(n_arms=2, pulls_per_round=4, rounds=2, judged_pulls=2, expert="oracle"), 2, (256, 60)),
    "subgoal_maze": (dict(size=5, max_moves=2, max_turns=6), 12, (256, 80)),
}


def get_config(env: str = "frozenlake") -> ConfigDict:
  if env not in ENVS:
    raise ValueError(f"unknown reference env {env!r}; available: {sorted(ENVS)}")
  kwargs, act_budget, (sft_episodes, sft_steps) = ENVS[env]
  c = ConfigDict()
  c.seed = 0
  c.workdir = f"runs/reference_{env}"
  c.tokenizer = "byte"
  c.model = ConfigDict(dict(preset="tiny"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.env = ConfigDict(dict(name=env, module="", kwargs=ConfigDict(kwargs)))
  c.agent = ConfigDict(dict(act_budget=act_budget, act_header="> ", system=""))
  c.sampling = ConfigDict(dict(temperature=1.5))
  c.rollout = ConfigDict(dict(n_tasks=8, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip",
                           policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),
                           entropy_coef=0.0, kl_coef=0.0, kl_estimator="k3", filter_zero_variance=True,
                           epochs=1, minibatches=2, microbatches=1))
  c.optim = ConfigDict(dict(lr=1e-4, warmup_steps=5, schedule="constant", max_grad_norm=1.0))
  c.sft = ConfigDict(dict(episodes=sft_episodes, steps=sft_steps, batch_size=16, lr=1e-3))
  c.eval = ConfigDict(dict(every=20, tasks=128))
  c.train = ConfigDict(dict(steps=40, checkpoint_every=20, keep_checkpoints=1, sample_episodes=4,
                            tensorboard=False, wandb_project=None))
  return c
