"""Self-critique on sort_repair: the `tiny` model sorts 3 digits, judges its answer and may revise it.

    jarl train --config configs/sort_critique.py
    python benchmarks/critique.py                   # 3 seeds x (critique with segment credit, plain
                                                    # GRPO credit, single attempt at matched tokens)

One turn: "> " ACT (the first attempt), "check: " CRITIQUE, "ok? " VERDICT (y accept / n revise),
"revise: " REVISE (kept only when the verdict says n). No env feedback (max_turns=1): the
revision is the only second chance. The warm start shows expert sorts, and in half of its
episodes a wrong first attempt (another task's answer) followed by the expert's answer as the
revision; the verdict is never supervised. RL then trains every segment with its own credit:
ACT the group advantage of the first attempt, CRITIQUE and VERDICT the exact counterfactual
difference between revising and accepting (both branches are stepped from the same state)
plus a calibration bonus, REVISE SCoRe's shaped reward (r2 + alpha (r2 - r1)).
Expected result: see benchmarks/results/critique.md (command above).
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.workdir = "runs/sort_critique"
  c.tokenizer = "byte"
  c.model = ConfigDict(dict(preset="tiny"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.env = ConfigDict(dict(name="sort_repair", kwargs=ConfigDict(dict(n=3, max_value=10, max_turns=1))))
  c.agent = ConfigDict(dict(act_budget=6, critique_budget=2, revise_budget=6, system="", act_header="> "))
  c.sampling = ConfigDict(dict(temperature=1.0))
  c.rollout = ConfigDict(dict(n_tasks=8, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip",
                           policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),
                           segment_credit=ConfigDict(dict(
                               act="first_attempt",
                               critique=ConfigDict(dict(name="counterfactual", calibration=0.5)),
                               verdict=ConfigDict(dict(name="counterfactual", calibration=0.5)),
                               revise=ConfigDict(dict(name="score", alpha=1.0)))),
                           entropy_coef=0.0, kl_coef=0.0, kl_estimator="k3", filter_zero_variance=True,
                           epochs=1, minibatches=2, microbatches=1))
  c.optim = ConfigDict(dict(lr=1e-4, warmup_steps=5, schedule="constant", max_grad_norm=1.0))
  c.sft = ConfigDict(dict(episodes=512, steps=150, batch_size=16, lr=1e-3, revise_fraction=0.5))
  c.eval = ConfigDict(dict(every=10, tasks=256))
  c.train = ConfigDict(dict(steps=60, checkpoint_every=10, keep_checkpoints=2, sample_episodes=4,
                            tensorboard=False, wandb_project=None))
  return c
