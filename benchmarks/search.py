"""Does tree search at evaluation help? Greedy acting against best-of-K with one-step lookahead and with Gumbel MuZero.

    python benchmarks/search.py                          # 3 envs x seeds 0 1 2 (the reference runs; trains any missing)
    python benchmarks/search.py --variants frozenlake --seeds 0

Takes the final policy of each reference run (`configs/reference.py:<env>`, the tiny model after
its warm start and 40 GRPO iterations, trained with K = 1) and evaluates it on the same 128
held-out tasks (eval seed 10000 + seed) three ways, at evaluation only (no retraining):

  greedy   the policy alone, one greedy action per turn (the reference table's number)
  lookahead  best-of-4 ACT candidates per turn (candidate 1 greedy, 2-4 sampled at the run's
           temperature 1.5), the one whose single env step scores best (reward + success)
  search   the same 4 candidates, chosen by Gumbel MuZero tree search (`jarl.search`, 64
           simulations, depth up to the episode's end) over sequences of them, with the env's
           pure step as the simulator and the policy's log-likelihood of each text as the prior

Both searches use the true simulator, which the agent does not have when it acts for real:
this measures what planning with a known model (as in board games) adds to this policy, not
what the policy has learned. wall_time_s is the reference run's own (training) time. Writes
benchmarks/results/search.json (+ .md).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

K, SIMULATIONS = 4, 64
ENVS = ("frozenlake", "sokoban", "subgoal_maze")
COLUMNS = ("variant", "seed", "greedy", "lookahead", "search", "search_changed_rate", "wall_time_s")


def run(env: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  del workdir  # the reference run's own directory
  config = common.config_module("reference").get_config(env)
  config.seed, config.workdir = seed, str(ROOT / "runs" / f"reference_{env}_seed{seed}")
  summary = common.train_or_reuse(config, rerun)
  restored = common.restore_final(config)
  row = dict(variant=env, seed=seed, greedy=summary["final_eval"]["success"], wall_time_s=summary["wall_time_s"])
  for name, score in (("lookahead", "env"), ("search", "search")):
    out = common.evaluate_final(config, K, restored, candidate_score=score, search_simulations=SIMULATIONS)
    row[name] = out["success"]
    if name == "search":
      row["search_changed_rate"] = out["planning_changed_rate"]
  return row


if __name__ == "__main__":
  common.variant_sweep("search", ENVS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes=f"Greedy held-out success on 128 tasks of the reference runs' final policies: alone, "
                             f"best-of-{K} with one-step env lookahead, best-of-{K} with Gumbel MuZero search "
                             f"({SIMULATIONS} simulations); search_changed_rate: how often search acted on a "
                             "candidate other than the greedy one.")
