"""Reference results for every built-in environment: held-out greedy success and return before and after RL.

    python benchmarks/reference.py                               # every env x seeds 0 1 2, runs in runs/reference_<env>_seed<k>
    python benchmarks/reference.py --variants countdown --seeds 0

Runs `jarl train --config configs/reference.py:<env>` (tiny model, a warm start on the env's
expert traces, then 40 GRPO iterations of 8 tasks x 8 samples) once per env and seed, and
writes benchmarks/results/reference.json (+ .md): per env and seed the greedy policy's
success rate and mean return on 128 held-out tasks after the warm start (`*_before`) and
after RL (`*_after`), and the wall time; then the mean per env. The README's table of
reference results is this file's mean rows. A run directory that already holds a finished
run of the same config is read, not rerun (`--rerun` forces it).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402


CONFIGS = common.config_module("reference")
COLUMNS = ("variant", "seed", "success_before", "success_after", "return_before", "return_after", "wall_time_s")


def run(env: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  return common.before_after(CONFIGS.get_config(env), env, seed, workdir, rerun)


if __name__ == "__main__":
  common.variant_sweep("reference", CONFIGS.ENVS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes="success / return: the greedy policy on 128 held-out tasks (eval seeds 10000 + seed), "
                             "after the warm start (before) and after 40 GRPO iterations (after); wall time includes "
                             "the warm start, compiles and evals.")
