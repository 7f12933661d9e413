"""The quickstart's learning result over seeds: held-out greedy success before and after RL.

    python benchmarks/quickstart.py                       # seeds 0 1 2, runs in runs/quickstart_seed<k>
    python benchmarks/quickstart.py --seeds 0 --workdir-prefix /tmp/qs

Runs `jarl train` (configs/quickstart.py) once per seed and writes
benchmarks/results/quickstart.json (+ .md): per seed the held-out greedy success on 256
boards after the warm start (`before_rl`) and after RL (`after_rl`), the best eval, and
the wall time; a last row gives the mean and the spread (min..max). A seed whose run
directory already holds a finished run of the same config is read, not rerun
(`--rerun` forces it). Seeds change the model init, the warm-start data, the rollouts
and the held-out boards (eval seed = 10000 + seed).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402


def get_config():
  """configs/quickstart.py's get_config (loaded by path: this script is also called quickstart)."""
  return common.config_module("quickstart").get_config()

COLUMNS = ("seed", "before_rl", "after_rl", "gain", "best_eval", "wall_time_s", "steps")


def run_seed(seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  config = get_config()
  config.seed, config.workdir = seed, str(workdir)
  summary = common.train_or_reuse(config, rerun)
  before, after = summary["eval_before_rl"]["success"], summary["final_eval"]["success"]
  return dict(seed=seed, before_rl=before, after_rl=after, gain=after - before,
              best_eval=summary["best_eval_success"], wall_time_s=summary["wall_time_s"], steps=summary["steps"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--workdir-prefix", default=str(ROOT / "runs" / "quickstart_seed"))
  parser.add_argument("--rerun", action="store_true")
  args = parser.parse_args()
  machine = common.machine_info()
  rows = [run_seed(s, pathlib.Path(f"{args.workdir_prefix}{s}"), args.rerun) for s in args.seeds]
  summary = {"seed": "mean"}
  for key in ("before_rl", "after_rl", "gain", "wall_time_s"):
    values = [r[key] for r in rows]
    summary[key] = statistics.mean(values)
    summary[f"{key}_range"] = [min(values), max(values)]
  common.write_results("quickstart", machine, rows + [summary], COLUMNS,
                       notes=f"Command: `python {' '.join(sys.argv)}`. Success = fraction of 256 held-out boards "
                             "solved by the greedy policy; wall time includes compiles and evals.")


if __name__ == "__main__":
  main()
