"""Does trained self-critique help? sort_repair with critique + revision against controls.

    python benchmarks/critique.py                        # 3 variants x seeds 0 1 2, runs in runs/critique_<variant>_seed<k>
    python benchmarks/critique.py --variants credit single --seeds 0

configs/sort_critique.py (tiny model, sort 3 digits, one turn, SFT warm start on expert
sorts and revision examples, then GRPO), in three variants:

  credit   ACT, CRITIQUE + VERDICT, REVISE; each segment with its own credit (first-attempt
           group advantage, counterfactual verdict + calibration, SCoRe revision)
  shared   the same turn schema, every token with the episode's GRPO advantage (no segment credit)
  single   ACT only (its warm start: expert sorts only), with more RL iterations so that it
           samples as many token slots as the critique variants (ACT 6 + CRITIQUE 2 + VERDICT 1
           + REVISE 6 slots per episode: 15/6 x)

Held-out evaluation (256 tasks, eval seed 10000 + seed) after the warm start and after RL:
greedy success of the first attempt and of the final answer (the verdict's choice); the
verdict's revise rate, precision and recall; flips wrong -> right and right -> wrong; and,
as the budget-matched reference, best-of-2 of the same policy's first attempts (two samples
at temperature 1, solved if either is right: an oracle verifier picks, so it is a ceiling
for what a perfect self-check could get out of two attempts).
Writes benchmarks/results/critique.json (+ .md).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
from jarl.rollout import make_collect  # noqa: E402
from jarl.sampling import SamplingConfig  # noqa: E402

SLOTS_CRITIQUE, SLOTS_SINGLE = 6 + 2 + 1 + 6, 6
VARIANTS = {
    "credit": {},
    "shared": {"algo.segment_credit": {}},
    "single": {"agent.critique_budget": 0, "algo.segment_credit": {}, "sft.revise_fraction": 0.0},
}
COLUMNS = ("variant", "seed", "first_before", "final_before", "first_after", "final_after", "best_of_2_after",
           "revise_rate", "verdict_precision", "verdict_recall", "wrong_to_right", "right_to_wrong", "rl_steps",
           "wall_time_s")


def get_config():
  return common.config_module("sort_critique").get_config()


def config_for(variant: str, seed: int, workdir: pathlib.Path):
  config = common.apply_overrides(get_config(), VARIANTS[variant])
  config.seed, config.workdir = seed, str(workdir)
  if variant == "single":  # matched sampled token slots
    config.train.steps = round(config.train.steps * SLOTS_CRITIQUE / SLOTS_SINGLE)
    config.eval.every = round(config.eval.every * SLOTS_CRITIQUE / SLOTS_SINGLE)
  return config


def best_of_2(config, tasks: int) -> float:
  """Held-out success of the final params' first attempts, best of 2 samples at temperature 1."""
  run, params = common.restore_final(config)
  agent = dataclasses.replace(run.agent, critique_budget=0)
  collect = make_collect(run.lm, run.env, agent, tasks, 2, SamplingConfig(temperature=1.0), run.mesh)
  traj = collect(params, jax.random.key(10_000 + config.seed))
  success_B = np.asarray(jax.device_get(traj.episode["success"]))
  return float(success_B.reshape(tasks, 2).any(1).mean())


def run(variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  config = config_for(variant, seed, workdir)
  summary = common.train_or_reuse(config, rerun)
  before, after = summary["eval_before_rl"], summary["final_eval"]
  row = dict(variant=variant, seed=seed, first_before=before.get("critique_first_success", before["success"]),
             final_before=before["success"], first_after=after.get("critique_first_success", after["success"]),
             final_after=after["success"], best_of_2_after=best_of_2(config, config.eval.tasks),
             rl_steps=summary["steps"], wall_time_s=summary["wall_time_s"])
  for key in ("revise_rate", "verdict_precision", "verdict_recall", "wrong_to_right", "right_to_wrong"):
    row[key] = after.get(f"critique_{key}", "")
  return row


if __name__ == "__main__":
  common.variant_sweep("critique", VARIANTS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes="Greedy held-out success on 256 tasks (first attempt / final answer); best_of_2: two "
                             "sampled first attempts, solved if either is right (oracle pick); critique columns "
                             "after RL, as fractions of turns (precision and recall of 'revise' at spotting a "
                             "wrong first attempt).")
