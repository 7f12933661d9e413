"""Does stating subgoals help? subgoal_maze with a PLAN segment against acting alone.

    python benchmarks/goals.py                           # 4 variants x seeds 0 1 2, runs in runs/goals_<variant>_seed<k>
    python benchmarks/goals.py --variants plan --seeds 0

configs/reference.py:subgoal_maze (tiny model; 5x5 mazes, up to 2 moves per turn, 6 turns; a
warm start on the BFS expert, then GRPO with 8 tasks x 8 samples), in two variants at a matched
number of sampled tokens:

  plan      each turn opens with a PLAN segment ("plan: subgoal 2 3", 12 token slots) before the
            action (12 slots); the warm start imitates the expert's subgoal (the cell its moves
            reach), and RL is paid the env's subgoal bonus (0.1 for a stated cell closer to the
            goal than any visited, reached within 2 turns) on top of the goal's 1;
            40 RL iterations
  plan_critic  `plan` with a turn-level critic: a value head, GAE over turns (gae_turns) for
            every segment, and the PLAN tokens credited with V(after the plan) - V(before it)
            (`credit.plan_value`) instead of the episode's group advantage; 40 RL iterations
  act_only  the same without PLAN (the reference run): 12 slots per turn, 80 RL iterations

Held-out evaluation (128 mazes, eval seed 10000 + seed): greedy success (reaching the goal
within 6 turns) after the warm start and after RL; return includes the subgoal bonus for
`plan`, so compare success. Writes benchmarks/results/goals.json (+ .md).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

PLAN_BUDGET = 12  # "subgoal R C" on a 5x5 maze is at most 11 bytes, plus the stop token
VARIANTS = ("plan", "plan_critic", "plan_critic_whitened", "act_only")
COLUMNS = ("variant", "seed", "success_before", "success_after", "return_before", "return_after", "rl_steps",
           "wall_time_s")


def get_config(variant: str):
  config = common.config_module("reference").get_config("subgoal_maze")
  if variant.startswith("plan"):
    config.agent.plan_budget = PLAN_BUDGET
  if variant.startswith("plan_critic"):
    config.algo.advantage = "gae_turns"
    config.algo.segment_credit = ConfigDict(dict(plan="plan_value"))
  if variant == "plan_critic_whitened":
    config.algo.whiten_advantages = True
  if variant == "act_only":  # matched sampled slots: (plan + act) / act times the iterations
    config.train.steps = config.train.steps * (PLAN_BUDGET + config.agent.act_budget) // config.agent.act_budget
  return config


def run(variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  return common.before_after(get_config(variant), variant, seed, workdir, rerun)


if __name__ == "__main__":
  common.variant_sweep("goals", VARIANTS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes="Greedy held-out success on 128 mazes after the warm start (before) and after RL "
                             "(after); return adds the subgoal bonus in the plan variant.")
