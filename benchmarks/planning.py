"""Does in-graph search help planning? path_star with best-of-K against plain acting and chance.

    python benchmarks/planning.py                        # 3 variants x seeds 0 1 2, runs in runs/planning_<variant>_seed<k>
    python benchmarks/planning.py --variants plain --seeds 0

configs/path_star.py (tiny model, star graph of degree 3 with arms of 2 nodes, the whole path
in one turn, SFT warm start on expert paths, then GRPO), in three variants at a matched number
of sampled token slots:

  plain    one action per turn (K = 1), 60 RL iterations
  search   best-of-3 ACT candidates per turn scored by one step of lookahead with the env as the
           simulator, the chosen one trained on (search distillation), 20 RL iterations
  plan     a PLAN segment (10 slots) before the action (14 slots) in which the warm start teaches
           the expert's plan: the path traced back from the goal ("9<12<4", each step the one edge
           into the node at hand, the reverse-order fix of Bachmann & Nagarajan), so the path
           is that plan read backwards; GRPO on the env's reward; 35 RL iterations
           (60 x 14 / (14 + 10): matched sampled slots)

Held-out evaluation (256 graphs, eval seed 10000 + seed): greedy success with no search
(K = 1, the policy alone) after the warm start and after RL, and after RL with best-of-3 search
at evaluation (candidate 1 greedy, 2 and 3 sampled at temperature 1, the env's lookahead picks).
Chance for a policy that does not plan the first step: 1/3.
Writes benchmarks/results/planning.json (+ .md).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
from jarl import envs  # noqa: E402
from jarl.tokenizer import ByteTokenizer  # noqa: E402

K, PLAN_BUDGET = 3, 10  # "19<18<17" and the stop token
VARIANTS = {"plain": {}, "search": {"agent.act_candidates": K, "eval.act_candidates": 1},
            "plan": {"agent.plan_budget": PLAN_BUDGET}}
COLUMNS = ("variant", "seed", "before_rl", "after_rl", "search_after_rl", "rl_steps", "wall_time_s")


def get_config():
  return common.config_module("path_star").get_config()


def run(variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  config = common.apply_overrides(get_config(), VARIANTS[variant])
  config.seed, config.workdir = seed, str(workdir)
  if variant == "search":  # matched sampled ACT slots: K candidates per turn, 1/K of the iterations
    config.train.steps //= K
    config.eval.every = max(config.eval.every // K, 1)
  if variant == "plan":  # matched sampled slots: the PLAN's on top of the ACT's (the env's action_len + 1)
    act = envs.make(config.env.name, tokenizer=ByteTokenizer(), **config.env.kwargs).action_len + 1
    config.train.steps = config.train.steps * act // (act + PLAN_BUDGET)
  summary = common.train_or_reuse(config, rerun)
  return dict(variant=variant, seed=seed, before_rl=summary["eval_before_rl"]["success"],
              after_rl=summary["final_eval"]["success"], search_after_rl=common.evaluate_final(config, K)["success"], rl_steps=summary["steps"], wall_time_s=summary["wall_time_s"])


if __name__ == "__main__":
  common.variant_sweep("planning", VARIANTS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes=f"Greedy held-out success on 256 graphs without search (K = 1) and with best-of-{K} "
                             "env-lookahead search at evaluation; chance (no planning of the first step): 0.333.")
