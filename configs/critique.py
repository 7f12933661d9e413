"""Self-critique: the `tiny` model answers, judges its answer and may revise it, in every turn.

    jarl train --config configs/critique.py               # sort_repair (the default)
    jarl train --config configs/critique.py:countdown     # multi-turn countdown
    python benchmarks/critique.py                          # both envs x 3 seeds x (critique with segment
                                                           # credit, plain GRPO credit, single attempt at
                                                           # matched tokens)

Each turn: "> " ACT (the first attempt), "check: " CRITIQUE, "ok? " VERDICT (y accept / n revise),
"revise: " REVISE (kept only when the verdict says n); the env then steps the chosen answer.

  sort_repair  sort 3 digits in one turn (max_turns=1): the revision is the only second chance.
  countdown    reach a target from 3 numbers up to 10 in 2 turns (the reference instance): after a
               miss the env says what the expression came to ("= 17, target 21") and the agent
               tries again, so the self-check competes with a retry on real feedback.

The warm start shows expert answers, and in half of its episodes a wrong first attempt (another
task's answer) followed by the expert's answer as the revision; the verdict is never supervised.
RL then trains every segment with its own credit: ACT the group advantage of the first attempt,
CRITIQUE and VERDICT the exact counterfactual difference between revising and accepting (both
branches are stepped from the same state) plus a calibration bonus, REVISE SCoRe's shaped reward
(r2 + alpha (r2 - r1)).
Expected result: see benchmarks/results/critique.md (command above).
"""

from ml_collections import ConfigDict

# env: (env kwargs, ACT and REVISE budget, sampling temperature, warm-start (episodes, steps))
ENVS = {
    "sort_repair": (dict(n=3, max_value=10, max_turns=1), 6, 1.0, (512, 150)),
    "countdown": (dict(n_numbers=3, max_number=10, max_target=30, max_turns=2, action_len=12), 12, 1.0, (1024, 240)),
}


def get_config(env: str = "sort_repair") -> ConfigDict:
  if env not in ENVS:
    raise ValueError(f"unknown self-critique env {env!r}; available: {sorted(ENVS)}")
  kwargs, budget, temperature, (sft_episodes, sft_steps) = ENVS[env]
  c = ConfigDict()
  c.seed = 0
  c.workdir = f"runs/critique_{env}"
  c.tokenizer = "byte"
  c.model = ConfigDict(dict(preset="tiny"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.env = ConfigDict(dict(name=env, module="", kwargs=ConfigDict(kwargs)))
  c.agent = ConfigDict(dict(act_budget=budget, critique_budget=2, revise_budget=budget, system="", act_header="> "))
  c.sampling = ConfigDict(dict(temperature=temperature))
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
  c.sft = ConfigDict(dict(episodes=sft_episodes, steps=sft_steps, batch_size=16, lr=1e-3, revise_fraction=0.5))
  c.eval = ConfigDict(dict(every=20 if env == "countdown" else 10, tasks=256))
  c.train = ConfigDict(dict(steps=60, checkpoint_every=10, keep_checkpoints=2, sample_episodes=4,
                            tensorboard=False, wandb_project=None))
  return c
