"""Does the agent adapt in context? bandit_series with the pull outcomes shown against hidden.

    python benchmarks/adaptation.py                      # 2 variants x seeds 0 1 2, runs in runs/adaptation_<variant>_seed<k>
    python benchmarks/adaptation.py --variants blind --seeds 0

configs/reference.py:bandit_series (tiny model; 2 arms, 2 rounds of 4 pulls, the last 2 pulls
of each round judged; a warm start on the explore-then-commit expert, then 40 GRPO iterations
of 8 tasks x 8 samples), in two variants with the same turns, token budgets and rewards:

  feedback  each observation shows the pull's outcome ("arm 2: 1"): the policy can find the
            good arm of each round from its own context
  blind     the outcome is hidden ("arm 2: ?"): the same model without the capability, the
            control; its best is to commit to one arm per round, which succeeds 1/4 of the time
            (the better of 2 arms in both rounds) with an expected return of 4.2

Held-out evaluation (128 tasks, eval seed 10000 + seed): greedy success (every judged pull on
the round's best arm) and return (wins in 8 pulls) after the warm start and after RL. For
scale: a uniformly random policy succeeds 1/16 = 0.0625 of the time, one that sticks to one arm
per round 1/4, both with an expected return of 4.2; the explore-then-commit expert that the warm start imitates and the oracle (always the
best arm, which reads the hidden payout probabilities) are measured on 128 tasks of their own
and given in the notes. Writes benchmarks/results/adaptation.json (+ .md).
"""

from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
from jarl import envs  # noqa: E402
from jarl.tokenizer import ByteTokenizer  # noqa: E402

VARIANTS = {"feedback": False, "blind": True}  # variant: env.kwargs.blind
COLUMNS = ("variant", "seed", "success_before", "success_after", "return_before", "return_after", "wall_time_s")


def get_config(variant: str):
  config = common.config_module("reference").get_config("bandit_series")
  config.env.kwargs.expert = "explore_commit"  # the env's default; the reference row keeps the oracle
  config.env.kwargs.blind = VARIANTS[variant]
  return config


def run(variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  return common.before_after(get_config(variant), variant, seed, workdir, rerun)


def expert_scores(expert: str, n_tasks: int = 128, seed: int = 10_000) -> tuple[float, float]:
  """(success, return) of a host expert over n_tasks episodes of the benchmark's env."""
  kwargs = dict(get_config("feedback").env.kwargs)
  env = envs.make("bandit_series", tokenizer=ByteTokenizer(), expert=expert, **kwargs)
  episodes = [env.expert_episode(k) for k in jax.random.split(jax.random.key(seed), n_tasks)]
  return (float(np.mean([bool(e[-1]["info"]["success"]) for e in episodes])),
          float(np.mean([sum(float(t["reward"]) for t in e) for e in episodes])))


if __name__ == "__main__":
  scores = {e: expert_scores(e) for e in ("explore_commit", "oracle")}
  common.variant_sweep(
      "adaptation", VARIANTS, run, COLUMNS, description=__doc__.splitlines()[0],
      notes="Greedy held-out success and return (wins in 8 pulls) on 128 tasks. For scale (experts on 128 tasks of their own): uniformly "
            "random 0.0625 success, one arm per round 0.25, both 4.2 return (expected); the explore-then-commit expert "
            f"{scores['explore_commit'][0]:.3f} / {scores['explore_commit'][1]:.2f}; the oracle "
            f"{scores['oracle'][0]:.3f} / {scores['oracle'][1]:.2f}.")
