"""Does trained self-critique help? sort_repair and multi-turn countdown against controls.

    python benchmarks/critique.py                        # all 8 variants x seeds 0 1 2 (runs/critique_<variant>_seed<k>)
    python benchmarks/critique.py --variants countdown_credit countdown_single --seeds 0
    python benchmarks/critique.py --variants smollm2_credit smollm2_single      # the pretrained model

configs/critique.py (tiny model; SFT warm start on expert answers and revision examples, then
GRPO) on sort_repair (sort 3 digits, one turn; variants without a prefix) and on countdown (3
numbers, 2 turns with the env's feedback between them; `countdown_` variants, without `shared`
for time), and configs/real_lm.py:chain_sum_critique (SmolLM2-135M-Instruct from its pretrained
weights, no warm start, reasoning-gym chain_sum; `smollm2_` variants; the critique, verdict and
revision are asked for in user messages of the chat template), in these variants:

  credit   ACT, CRITIQUE + VERDICT, REVISE; each segment with its own credit (first-attempt
           group advantage, counterfactual verdict + calibration, SCoRe revision)
  counterfactual  (countdown) `credit` without the calibration bonus: the verdict is paid only the
           exact difference between the branch it chose and the other
  shared   the same turn schema, every token with the episode's GRPO advantage (no segment credit)
  single   ACT only (its warm start: expert answers only), with more RL iterations so that it
           samples as many token slots as the critique variants (ACT b + CRITIQUE c + VERDICT 1 +
           REVISE b slots per turn against b: 15/6 x for sort, 27/12 x for countdown, 57/16 x for
           smollm2)

Held-out evaluation (256 tasks, eval seed 10000 + seed) after the warm start and after RL:
episode success (`success_*`, the answers the verdicts chose); per turn played, success of the
first attempt and of the chosen answer (`first_*`, `final_*`; the same as the episode's with one
turn), the verdict's revise rate, precision and recall, flips wrong -> right and right -> wrong;
and, as the budget-matched reference, best-of-2 of the same policy without its critique (two
episodes sampled at the config's temperature, solved if either is: an oracle verifier picks, so
it is a ceiling for what a perfect self-check could get out of two attempts).
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

ARMS = {
    "credit": {},
    "counterfactual": {"algo.segment_credit.critique.calibration": 0.0, "algo.segment_credit.verdict.calibration": 0.0},
    "shared": {"algo.segment_credit": {}},
    "single": {"agent.critique_budget": 0, "algo.segment_credit": {}, "sft.revise_fraction": 0.0},
}
# env: (variant prefix, arms, (config module, its get_config argument))
ENV_ARMS = {"sort_repair": ("", ("credit", "shared", "single"), ("critique", "sort_repair")),
            "countdown": ("countdown_", ("credit", "counterfactual", "single"), ("critique", "countdown")),
            "chain_sum": ("smollm2_", ("credit", "single"), ("real_lm", "chain_sum_critique"))}
VARIANTS = {f"{prefix}{arm}": (env, arm) for env, (prefix, arms, _) in ENV_ARMS.items() for arm in arms}
COLUMNS = ("variant", "seed", "success_before", "success_after", "best_of_2_after", "first_before", "final_before",
           "first_after", "final_after", "revise_rate", "verdict_precision", "verdict_recall", "wrong_to_right",
           "right_to_wrong", "rl_steps", "wall_time_s")


def config_for(variant: str, seed: int, workdir: pathlib.Path):
  env, arm = VARIANTS[variant]
  module, name = ENV_ARMS[env][2]
  config = common.config_module(module).get_config(name)
  a = config.agent
  act, slots = a.act_budget, a.act_budget + a.critique_budget + 1 + a.revise_budget
  config = common.apply_overrides(config, ARMS[arm])
  config.seed, config.workdir = seed, str(workdir)
  if arm == "single":  # matched sampled token slots per turn
    config.train.steps = round(config.train.steps * slots / act)
    config.eval.every = round(config.eval.every * slots / act)
  return config


def best_of_2(config, tasks: int) -> float:
  """Held-out success of the final params without the critique, best of 2 episodes sampled at the
  config's temperature (host envs: held-out problems, their eval split)."""
  run, params = common.restore_final(config)
  agent = dataclasses.replace(run.agent, critique_budget=0)
  sampling = SamplingConfig(temperature=config.sampling.temperature)
  collect = make_collect(run.lm, run.eval_env, agent, tasks, 2, sampling, run.mesh)
  traj = collect(params, jax.random.key(10_000 + config.seed))
  success_B = np.asarray(jax.device_get(traj.episode["success"]))
  return float(success_B.reshape(tasks, 2).any(1).mean())


def run(variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  config = config_for(variant, seed, workdir)
  summary = common.train_or_reuse(config, rerun)
  before, after = summary["eval_before_rl"], summary["final_eval"]
  row = dict(variant=variant, seed=seed, success_before=before["success"], success_after=after["success"],
             best_of_2_after=best_of_2(config, config.eval.tasks), rl_steps=summary["steps"],
             wall_time_s=summary["wall_time_s"])
  for when, evaluation in (("before", before), ("after", after)):
    for key in ("first", "final"):
      row[f"{key}_{when}"] = evaluation.get(f"critique_{key}_success", "")
  for key in ("revise_rate", "verdict_precision", "verdict_recall", "wrong_to_right", "right_to_wrong"):
    row[key] = after.get(f"critique_{key}", "")
  return row


if __name__ == "__main__":
  common.variant_sweep("critique", VARIANTS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes="Greedy held-out success on 256 tasks: success_* per episode; first_* / final_* per turn "
                             "played, of the first attempt / the answer the verdict chose; best_of_2: two sampled "
                             "episodes without the critique, solved if either is (oracle pick); critique columns "
                             "after RL, as fractions of turns (precision and recall of 'revise' at spotting a "
                             "wrong first attempt).")
