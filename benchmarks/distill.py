"""Does training on search-chosen actions (search distillation) beat plain GRPO at matched sampled tokens?

    python benchmarks/distill.py                         # 2 variants x seeds 0 1 2 (plain reuses the reference runs)
    python benchmarks/distill.py --variants search --seeds 0

configs/reference.py:subgoal_maze (tiny model, 5x5 mazes, up to 2 moves per turn, 6 turns; a warm
start on the BFS expert, then GRPO with 8 tasks x 8 samples at temperature 1.5), where search at
evaluation helps most (benchmarks/results/search.md: greedy 39%, Gumbel MuZero 48%). Two
variants at a matched number of sampled ACT token slots:

  plain      the reference run itself: one action per turn (K = 1), 40 RL iterations
  search     best-of-4 ACT candidates per turn (sampled at temperature 1.5) chosen by Gumbel MuZero
             search (`candidate_score="search"`, 32 simulations, depth up to the episode's end, the
             env's pure step as the simulator, the policy's log-likelihood as the prior); the chosen
             one is acted on and trained on (GRPO advantage of its episode), 10 RL iterations
(benchmarks/planning.py trains with one-step env lookahead instead, on path_star.)

The searches use the true simulator at training time only; every policy is evaluated alone.
Held-out evaluation (128 mazes, eval seed 10000 + seed): greedy success with one action per turn
(the policy alone) after the warm start and after RL, and after RL with best-of-4 Gumbel MuZero
search at evaluation (64 simulations, as in search.py). Writes benchmarks/results/distill.json (+ .md).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

ENV, K, TRAIN_SIMULATIONS, EVAL_SIMULATIONS = "subgoal_maze", 4, 32, 64
VARIANTS = {"plain": None, "search": "search"}
COLUMNS = ("variant", "seed", "success_before", "success_after", "search_after", "rl_steps", "wall_time_s")


def get_config(variant: str):
  config = common.config_module("reference").get_config(ENV)
  score = VARIANTS[variant]
  if score is not None:  # matched sampled ACT slots: K candidates per turn, 1/K of the iterations
    config.agent.act_candidates, config.agent.candidate_score = K, score
    config.agent.search_simulations = TRAIN_SIMULATIONS
    config.train.steps //= K
    config.eval.every = config.train.steps
    config.eval.act_candidates = 1  # evaluate the policy alone
  return config


def run(variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  config = get_config(variant)
  if variant == "plain":  # the reference run's own directory (search.py and reference.py read it too)
    workdir = ROOT / "runs" / f"reference_{ENV}_seed{seed}"
  row = common.before_after(config, variant, seed, workdir, rerun)
  del row["return_before"], row["return_after"]
  search = common.evaluate_final(config, K, candidate_score="search", search_simulations=EVAL_SIMULATIONS)
  return dict(row, search_after=search["success"])


if __name__ == "__main__":
  common.variant_sweep("distill", VARIANTS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes=f"Greedy held-out success on 128 mazes of the policy alone after the warm start "
                             f"(before) and after RL (after), and after RL with best-of-{K} Gumbel MuZero search "
                             f"({EVAL_SIMULATIONS} simulations) at evaluation.")
