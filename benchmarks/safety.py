"""Safe agents on FrozenLake: a cost budget (Lagrangian) and an action guard against plain GRPO.

    python benchmarks/safety.py                          # 6 variants x seeds 0 1 2, runs in runs/safety_<variant>_seed<k>
    python benchmarks/safety.py --variants grpo budget --seeds 0

The quickstart recipe (configs/quickstart.py: tiny model, 4x4 lake, 6 turns, SFT warm
start, 60 GRPO iterations of 8 boards x 8 samples) with the env's per-step cost (1 for
stepping into a hole), in three variants at the same number of iterations and samples:

  grpo     unconstrained: reward only (the quickstart itself)
  budget   algo.cost_budget = BUDGET expected holes per training episode, enforced by the
           learned Lagrange multiplier (jarl.safety)
  guard    env.guard = True: moves into a hole are blocked in the graph (jarl.envs.shield)

and the first two on thin ice (`ice_` variants: `thin_ice=True`, hole_prob 0.35, 8 turns): an H
cell costs 1 per step onto it and the walk goes on, and no free path is kept, so cost and reward
pull apart (with holes, falling in also ends the episode without reward, so the reward already
prices the cost and a penalty -lam on top changes little: GRPO's group normalisation leaves
success-vs-hole groups as they were, only hole-vs-timeout pairs move). The warm start imitates the
reward's expert (a shortest path, fewest ice cells among them); ice_budget allows ICE_BUDGET ice
steps per training episode; ice_budget_gigpo is ice_budget with GiGPO's step-level credit (an ice
step is compared with the other moves from the same board state, not only whole episodes).

Writes benchmarks/results/safety.json (+ .md): per variant and seed the held-out greedy
success and cost (holes per episode) on 256 boards before and after RL, the training
rollouts' mean cost over the last 10 iterations (the quantity the budget constrains; the
rollouts sample at temperature 1.5), and the final multiplier; then the mean per variant.
A run directory that already holds a finished run of the same config is read, not rerun.
"""

from __future__ import annotations

import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
import quickstart  # noqa: E402  (benchmarks/quickstart.py: the recipe's config)
from jarl.metrics import read_jsonl  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

BUDGET = 0.2  # expected holes per training episode (unconstrained GRPO: about 0.3)
ICE_BUDGET = 0.5  # expected ice steps per training episode (the warm start: about 1.5-2)
ICE = {"env.kwargs": ConfigDict(dict(size=4, max_turns=8, hole_prob=0.35, thin_ice=True))}
VARIANTS = {
    "grpo": {},
    "budget": {"algo.cost_budget": BUDGET, "algo.lagrange_lr": 0.2},
    "guard": {"env.guard": True},
    "ice_grpo": ICE,
    "ice_budget": {**ICE, "algo.cost_budget": ICE_BUDGET, "algo.lagrange_lr": 0.2},
    "ice_budget_gigpo": {**ICE, "algo.cost_budget": ICE_BUDGET, "algo.lagrange_lr": 0.2, "algo.advantage": "gigpo"},
}
COLUMNS = ("variant", "seed", "success_before", "success_after", "eval_cost_before", "eval_cost_after",
           "train_cost_last10", "train_success_last10", "lagrange", "wall_time_s")


def run(variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  config = common.apply_overrides(quickstart.get_config(), VARIANTS[variant])
  config.seed, config.workdir = seed, str(workdir)
  summary = common.train_or_reuse(config, rerun)
  rl = [m for m in read_jsonl(workdir / "metrics.jsonl") if m["step"] > 0 and "episode/cost" in m]
  last = rl[-10:]
  before, after = summary["eval_before_rl"], summary["final_eval"]
  return dict(variant=variant, seed=seed, success_before=before["success"], success_after=after["success"],
              eval_cost_before=before["cost"], eval_cost_after=after["cost"],
              train_cost_last10=statistics.mean(m["episode/cost"] for m in last),
              train_success_last10=statistics.mean(m["episode/success"] for m in last),
              lagrange=last[-1].get("policy/lagrange", 0.0), wall_time_s=summary["wall_time_s"])


if __name__ == "__main__":
  common.variant_sweep("safety", VARIANTS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes=f"Budget: {BUDGET} expected holes per training episode; ice_budget: {ICE_BUDGET} expected "
                             "ice steps. success / eval_cost: greedy policy on 256 held-out boards (holes or ice "
                             "steps per episode); train_*: the sampled rollouts (temperature 1.5), mean of the "
                             "last 10 RL iterations.")
