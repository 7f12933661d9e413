"""Shared helpers for every benchmark: machine info, a measured matmul peak, timing, results files.

    machine = common.machine_info()                      # cpu, cores, devices, versions, load
    peak = common.matmul_peak_flops()                    # FLOP/s of a large float32 jnp.dot, measured now
    t = common.time_call(fn, repeats=3)                  # first call apart (compile / warm-up), then the median
    common.write_results("generate", machine, rows, columns)   # results/<name>.json + .md, table printed
    lm = common.stop_rate_weights(lm, stop_id, mean_len=16)   # the "variable" workloads' weights

Numbers from one run are compared with each other: measure the peak and every system in
the same run, because a shared machine's speed changes from minute to minute.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jarl.machine
from jarl import models

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
PACKAGES = jarl.machine.PACKAGES + ("torch", "transformers", "google-tunix")


def machine_info() -> dict:
  """What the numbers were measured on (`jarl.machine.info` with the benchmarks' packages), including the
  load average when the run started."""
  return jarl.machine.info(PACKAGES)


@dataclasses.dataclass
class Timing:
  first_s: float  # the first call: compilation or warm-up plus one run
  times_s: list[float]  # the calls after it

  @property
  def median_s(self) -> float:
    return statistics.median(self.times_s)

  @property
  def compile_s(self) -> float:
    """Time the first call spent beyond a typical call (XLA compile, torch warm-up)."""
    return max(self.first_s - self.median_s, 0.0)


def time_call(fn: Callable[[], object], repeats: int = 3) -> Timing:
  """Call `fn` (which must block until its result is ready) once, then `repeats` more times."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return Timing(first, times)


WORKLOADS = ("fixed", "variable")  # every row generates its whole budget / rows stop at a drawn stop token


class VariableWorkload:
  """For a benchmark's Workload dataclass with a `mean_len` field: 0 is the fixed workload, > 0 the
  variable one (stop_rate_weights with that mean length)."""

  @property
  def variable(self) -> bool:
    return self.mean_len > 0

  @property
  def name(self) -> str:
    return WORKLOADS[self.variable]


def workloads(parser, text: str) -> list[str]:
  """The --workloads argument's names; an unknown one is the parser's error."""
  names = text.split(",")
  if not set(names) <= set(WORKLOADS):
    parser.error(f"--workloads: {text!r}; choose from {', '.join(WORKLOADS)}")
  return names


def stop_rate_weights(lm: models.LM, stop_id: int, mean_len: float) -> models.LM:
  """`lm` with weights whose next token is uniform over the vocabulary, except `stop_id`, drawn with
  probability 1 / mean_len at every step whatever came before: a row's length (stop included) is
  geometric with mean `mean_len`, the spread of lengths the "variable" workloads need.

  Every shape, and so every FLOP, is the model's: each token embeds to the same vector along the first
  axis, the blocks' output projections (attention `o`, MLP `down`) are zero so the residual stream
  stays that vector, the final norm keeps only the first axis, and the output row of that axis is 0
  for every token but the stop. XLA and torch multiply by the zeros as by any weights. (With tied
  embeddings the stop's raised first entry is also its input embedding: after a stop the rate moves
  by ~1e-4 through the norm's eps.)
  """
  cfg = lm.config
  V, D = cfg.vocab_size, cfg.d_model
  if not 0 <= stop_id < V or mean_len <= 1:
    raise ValueError(f"stop_id {stop_id} must be in [0, {V}) and mean_len {mean_len} > 1")
  h0 = 1.0 / np.sqrt(1.0 / D + cfg.rms_norm_eps)  # the final norm's first output for the residual e_0
  gap = np.log((V - 1) / (mean_len - 1))  # the stop's logit over the others': p = e^gap / (e^gap + V - 1)

  def zero_outputs(path, x):
    names = [str(getattr(k, "key", k)) for k in path]
    return jnp.zeros_like(x) if names[-2:] in (["o", "kernel"], ["down", "kernel"]) else x
  params = jax.tree_util.tree_map_with_path(zero_outputs, lm.params)
  embed_VxD = jnp.zeros_like(params["embed"]).at[:, 0].set(1.0)
  if cfg.tie_embeddings:  # logits = h . embed: every token's first entry 1, the stop's raised
    embed_VxD = embed_VxD.at[stop_id, 0].add(gap / h0)
  else:
    params["lm_head"] = dict(kernel=jnp.zeros_like(params["lm_head"]["kernel"]).at[0, stop_id].set(gap / h0))
  params["embed"] = embed_VxD
  params["final_norm"] = dict(scale=jnp.zeros_like(params["final_norm"]["scale"]).at[0].set(1.0))
  return lm.replace(params=params)


def matmul_peak_flops(sizes: Sequence[int] = (1024, 2048), repeats: int = 5, dtype=jnp.float32) -> float:
  """The best of the median FLOP/s of an n x n x n jnp.dot over `sizes` on the default device."""
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    dot = jax.jit(jnp.dot)
    timing = time_call(lambda: dot(a, b).block_until_ready(), repeats)
    best = max(best, 2 * n ** 3 / timing.median_s)
  return best


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
  return "" if value is None else str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def write_results(name: str, machine: dict, rows: Sequence[dict], columns: Sequence[str],
                  notes: str = "") -> pathlib.Path:
  """Write results/<name>.json ({"machine", "rows"}) and results/<name>.md; print the table."""
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.json"
  path.write_text(json.dumps({"machine": machine, "rows": list(rows)}, indent=2) + "\n")
  table = markdown_table(rows, columns)
  header = (f"# {name}\n\n{machine['cpu']}, {machine['cores']} cores, load average at start "
            f"{machine['load_average_at_start']}; "
            + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
            + "".join(f"; {k}={v}" for k, v in machine.get("env", {}).items()) + "\n\n")
  (RESULTS / f"{name}.md").write_text(header + table + "\n" + (f"\n{notes}\n" if notes else ""))
  print(table)
  return path


# ---- Learning benchmarks: variants of a config x seeds -----------------------------------------


def apply_overrides(config, overrides: dict):
  """Set dotted keys ("section.field", "section.sub.field") of a ConfigDict (a benchmark variant);
  returns the config."""
  for key, value in overrides.items():
    *path, field = key.split(".")
    node = config
    for name in path:
      node = node[name]
    node[field] = value
  return config


def finished(config) -> dict | None:
  """The summary of a finished run of this same config in its workdir, else None."""
  done = pathlib.Path(config.workdir) / "summary.json"
  if done.exists() and json.loads(done.read_text())["config"] == json.loads(config.to_json()):
    return json.loads(done.read_text())
  return None


def train_or_reuse(config, rerun: bool = False) -> dict:
  """`jarl.train.train(config)`'s summary; a workdir that holds a finished run of the same config is read."""
  from jarl import train
  return (not rerun and finished(config)) or train.train(config, overwrite=True)


def before_after(config, variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  """Train (or reuse) `config` with this seed in `workdir`; the row of held-out greedy success and
  return after the warm start (`*_before`) and at the end (`*_after`), RL steps and wall time."""
  config.seed, config.workdir = seed, str(workdir)
  summary = train_or_reuse(config, rerun)
  before, after = summary["eval_before_rl"], summary["final_eval"]
  return dict(variant=variant, seed=seed, success_before=before["success"], success_after=after["success"],
              return_before=before["return"], return_after=after["return"], rl_steps=summary["steps"],
              wall_time_s=summary["wall_time_s"])


def config_module(name: str):
  """configs/<name>.py as a module, loaded by path (a benchmark may share its config's name)."""
  path = RESULTS.parent.parent / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def variant_sweep(name: str, variants: Sequence[str], run: Callable, columns: Sequence[str], notes: str,
                  description: str) -> None:
  """The command line of a learning benchmark: `run(variant, seed, workdir, rerun) -> row` for
  every --variants x --seeds (default all x 0 1 2), a mean row per variant, results/<name>.*.

  Running some of the variants keeps the other variants' rows of an existing results file
  (in `variants` order), and the notes say which variants this command ran."""
  import argparse
  import sys
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--variants", nargs="+", default=list(variants), choices=list(variants))
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--workdir-prefix", default=str(RESULTS.parent.parent / "runs" / f"{name}_"))
  parser.add_argument("--rerun", action="store_true")
  args = parser.parse_args()
  machine = machine_info()
  rows = {}
  for variant in args.variants:
    runs = [run(variant, s, pathlib.Path(f"{args.workdir_prefix}{variant}_seed{s}"), args.rerun) for s in args.seeds]
    mean = {"variant": variant, "seed": "mean"}
    for key in columns[2:]:
      values = [r[key] for r in runs if r.get(key, "") != ""]
      mean[key] = statistics.mean(values) if values else ""
    rows[variant] = runs + [mean]
  command = f"Command: `python {' '.join(sys.argv)}`."
  kept = _kept_rows(name, set(variants) - set(args.variants))
  if kept:
    rows.update(kept)
    command += f" Rows of {', '.join(v for v in variants if v in kept)} are from an earlier run of the same benchmark."
  write_results(name, machine, [r for v in variants if v in rows for r in rows[v]], columns,
                notes=f"{command} {notes}")


def _kept_rows(name: str, variants: set) -> dict:
  """variant -> its rows in the existing results/<name>.json, for the given variants."""
  path = RESULTS / f"{name}.json"
  kept = {}
  for row in json.loads(path.read_text())["rows"] if path.exists() and variants else []:
    if row["variant"] in variants:
      kept.setdefault(row["variant"], []).append(row)
  return kept


def evaluate_final(config, act_candidates: int, restored=None, **agent) -> dict:
  """`train.evaluate` on the run's eval.tasks held-out tasks (eval seed 10000 + seed) with its final
  params, best-of-`act_candidates` at evaluation and `agent` fields replaced (e.g. candidate_score);
  `restored`: `restore_final(config)`'s result, to reuse."""
  import dataclasses
  from jarl import train
  run, params = restored or restore_final(config)
  run = dataclasses.replace(run, agent=dataclasses.replace(run.agent, **agent))
  run.config.eval.act_candidates = act_candidates
  return train.evaluate(run, params, config.eval.tasks, 10_000 + config.seed)


def restore_final(config):
  """(run, params) of a finished `jarl train` run: its built pieces and the latest checkpoint's params."""
  from jarl import learner, train
  from jarl.checkpoint import Checkpointer
  run = train.build(config)
  state = learner.init_state(run.lm, run.optim, seed=config.seed, reference=run.algo.kl_coef > 0)
  ckpt = Checkpointer(pathlib.Path(config.workdir) / "checkpoints", keep=config.train.keep_checkpoints)
  state, _ = ckpt.restore(state)
  ckpt.close()
  return run, state.params
