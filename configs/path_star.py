"""Planning on path_star: the `tiny` model finds the path from the center of a star graph to a leaf.

    jarl train --config configs/path_star.py
    jarl train --config configs/path_star.py --config.agent.act_candidates=3   # train with best-of-3 search
    jarl train --config configs/path_star.py --config.agent.plan_budget=10     # a PLAN: the path traced back
    python benchmarks/planning.py                   # 3 seeds: plain GRPO vs best-of-3 search vs PLAN

Degree 3, arms of 2 nodes, labels below 20; one turn: the whole path. A policy that does not
plan (picks an arm, then follows its edges) succeeds 1/3 of the time (Bachmann & Nagarajan
2024). A short warm start on expert paths, then GRPO. With `agent.act_candidates=K` each turn
samples K candidate paths and acts on the best by one step of lookahead with the env as the
simulator (`jarl.planning`); training on the chosen ones distils the search into the policy.
`eval.act_candidates` sets the search at evaluation (None: the agent's). With `agent.plan_budget`
> 0 a PLAN segment comes first, warm-started on the expert's plan: the path traced back from the
goal ("9<12<4", the env's `expert_plan`). Expected result: see
benchmarks/results/planning.md (command above).
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.workdir = "runs/path_star"
  c.tokenizer = "byte"
  c.model = ConfigDict(dict(preset="tiny"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.env = ConfigDict(dict(name="path_star", module="", kwargs=ConfigDict(dict(degree=3, arm_length=2, max_label=20))))
  c.agent = ConfigDict(dict(system="", act_header="> ", plan_budget=0, act_candidates=1, candidate_score="env"))
  c.sampling = ConfigDict(dict(temperature=1.0))
  c.rollout = ConfigDict(dict(n_tasks=8, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip",
                           policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),
                           entropy_coef=0.0, kl_coef=0.0, kl_estimator="k3", filter_zero_variance=True,
                           epochs=1, minibatches=2, microbatches=1))
  c.optim = ConfigDict(dict(lr=1e-4, warmup_steps=5, schedule="constant", max_grad_norm=1.0))
  c.sft = ConfigDict(dict(episodes=1024, steps=300, batch_size=16, lr=1e-3))
  c.eval = ConfigDict(dict(every=10, tasks=256, act_candidates=None))
  c.train = ConfigDict(dict(steps=60, checkpoint_every=10, keep_checkpoints=2, sample_episodes=4,
                            tensorboard=False, wandb_project=None))
  return c
