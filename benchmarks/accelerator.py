"""Decode, GRPO and multi-turn throughput on one GPU or TPU, against the chip's rooflines.

    python benchmarks/accelerator.py                # qwen2.5-0.5b and qwen3-1.7b, at most ~8 min on one chip
    python benchmarks/accelerator.py --dry-run      # the same code paths on CPU, tiny shapes, < 1 min (tested)
    python benchmarks/accelerator.py --budget-s 300 # start no measurement after 300 s (default 450)

Nothing is downloaded: random weights of the presets' shapes (`jarl.models.preset`), model.attention
"auto" (splash on TPU, cudnn on GPU for forwards from slot 0, chunked into a KV cache), scan_layers,
remat "block". Measured, in this order (each measurement wrapped: an error, e.g. an OOM or an
unsupported kernel, goes into that row's note and the run goes on; after `--budget-s` seconds no
new measurement starts and the note says which were skipped):

  decode     qwen2.5-0.5b and qwen3-1.7b, bfloat16 params and compute, `jarl.sampling.make_generate`
             (benchmarks/generate.py's jarl side): random 128-token prompts at batch 1, 64 and 256,
             128 new tokens sampled at temperature 1 over the full vocabulary, no early stop.
             tokens_per_s = batch x 128 / one whole call (prefill included); decode_tokens_per_s
             = batch / one decode step, step = (t(128 new) - t(1 new)) / 127; roofline_tokens_per_s
             = batch / (bytes one step must read / HBM bandwidth), bytes = the weights (an untied
             input embedding: only its rows, so not counted) + the KV cache filled so far (batch x
             layers x 2 x kv_heads x head_dim x context x 2 bytes) at the timed steps' mean context
             (prompt + 64); fraction_of_roofline = decode_tokens_per_s / roofline_tokens_per_s.
  grpo       qwen2.5-0.5b, then (last: the largest) qwen3-1.7b: one GRPO iteration (benchmarks/grpo_step.py's
             jarl side: `learner.make_iteration(make_collect, make_update)`, one jit), float32
             master params, bfloat16 compute, 8 prompts x 8 samples, 128 prompt + 128 completion
             tokens, one AdamW step; algo.logits_chunk 128 (`--logits-chunk`: the 150k-vocabulary
             logits of 64 x 256 slots at once are ~10 GB in float32). seconds = the median of 2
             iterations after the first; mfu = grpo_step.model_flops (4 x one forward over every
             row's 256 tokens) / seconds / the chip's peak bfloat16 FLOP/s; update_s and
             update_mfu = the update alone (its own jit) with 3 of those 4 forwards' FLOPs.
  multiturn  qwen2.5-0.5b, float32 master params, bfloat16 compute (as training's rollout):
             benchmarks/multiturn.py's jarl side (`make_collect`, the DigitCount env), 128 episodes
             x 4 turns of 32 sampled tokens, 8-token observations, 32-token prompt;
             episodes_per_s = 128 / the median of 2 batches after the first.
  memory     qwen3-1.7b: benchmarks/memory.py's "all" variant compiled for this chip (1 row x 4096
             slots; update_temp_gib = XLA's temporaries of the update's gradient, planned_gib =
             `jarl.plan.update_activations`, prefill_temp_gib = a 4096-slot prefill).

peak_memory_gib: the device's `memory_stats()["peak_bytes_in_use"]` after the row's measurement: the
process's peak so far (it is never reset), so the largest workload runs last; None where the backend
keeps no stats (CPU). On a GPU the script lets jax take 90% of its memory (XLA_PYTHON_CLIENT_MEM_FRACTION,
unless set), not 75%.

Chips (`jax.devices()[0].device_kind`, lower-cased, matched by substring; HBM bytes/s, dense bfloat16
FLOP/s): H100 SXM 3.35e12 / 989e12, H100 PCIe 2.0e12 / 756e12, H200 4.8e12 / 989e12, A100 80GB
2.0e12 / 312e12, A100 40GB 1.555e12 / 312e12, TPU v4 1.2e12 / 275e12, v5e 0.819e12 / 197e12, v5p
2.765e12 / 459e12, v6e 1.64e12 / 918e12. Another device (CPU included): rooflines and MFU None.

Targets (meets_target): decode at batch 256 >= 60% of the HBM roofline; the update (update_mfu)
>= 40% MFU on an H100-class GPU (H100, H200; elsewhere that row's meets_target is None).

--dry-run: the preset "tiny" in float32 (decode at batch 1 and 4, 6 new tokens; GRPO 2 x 2 samples of 6
tokens without the rollout / update breakdown; 2 episodes x 2 turns; a 64-slot memory compile), XLA's
optimizations off (`jax_disable_most_optimizations`: compiles about 2x faster on a CPU), one timed call
each: it checks the code paths, not the speed. No download, no hub: a checkout and its wheels suffice.

On a machine with no network whose image has jax for its chip but not all of jarl's dependencies (the
lent H100 / H200 image: Python 3.12, jax 0.11.2, no ml-collections, mctx or tensorboardX), download
their wheels here into `.whl/` (git-ignored), carry that folder and install it there without an index:

    pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
        ml-collections==1.1.0 mctx==0.0.71 tensorboardX==2.6.5 flax==0.12.12
    python3 -m pip install -q --no-index --no-deps .whl/*.whl && python3 benchmarks/accelerator.py --results-dir $OUT

flax rides along because flax 0.12.8 (what this project is tested with on Python 3.11, jax 0.10) fails to
import under jax 0.11 (`jax.experimental.hijax` lost `HiPrimitive`). Checked on CPU in a Python 3.12 venv
with the image's jax 0.11.2, numpy 2.5.2 and transformers 5.17.0 and these wheels: the dry run passes, and
so does the test suite but for tests/test_benchmarks_memory.py's plan-vs-XLA ratio on tiny shapes (1.31
against its 1.25 bound: XLA 0.11 counts fewer temporaries than the jax 0.10 the plan was fitted to).

Results: results/accelerator_<chip>.json and .md (chip: "h100", "v5e", ...; the dry run:
accelerator_dryrun_cpu in `--results-dir`), with the machine, the chip's numbers and the skips.
"""

from __future__ import annotations

import os

# before jax starts its GPU client: its default 75% of the GPU memory may not hold qwen3-1.7b's update beside its
# iteration's state (float32 params, Adam moments); recorded in the results' env
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import pathlib
import re
import sys
import time
import traceback

import jax
import jax.numpy as jnp

if importlib.util.find_spec("jarl") is None:  # a checkout that is not installed: its own jarl
  sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import generate  # noqa: E402
import grpo_step  # noqa: E402
import memory  # noqa: E402
import multiturn  # noqa: E402
from jarl import models  # noqa: E402
from jarl.envs.codec import Codec  # noqa: E402

GiB = 2**30
# (slug, substrings that must all occur in the lower-cased device kind, HBM bytes/s, dense bf16 FLOP/s);
# the first match wins, so the more specific names come first.
CHIPS = (
    ("h100-pcie", ("h100", "pcie"), 2.0e12, 756e12),
    ("h200", ("h200",), 4.8e12, 989e12),
    ("h100", ("h100",), 3.35e12, 989e12),
    ("a100-80gb", ("a100", "80gb"), 2.0e12, 312e12),
    ("a100-40gb", ("a100",), 1.555e12, 312e12),
    ("v5e", ("v5 lite",), 0.819e12, 197e12),
    ("v5e", ("v5e",), 0.819e12, 197e12),
    ("v6e", ("v6 lite",), 1.64e12, 918e12),
    ("v6e", ("v6e",), 1.64e12, 918e12),
    ("v5p", ("v5",), 2.765e12, 459e12),
    ("v4", ("v4",), 1.2e12, 275e12),
)
H100_CLASS = ("h100", "h100-pcie", "h200")
DECODE_TARGET, UPDATE_MFU_TARGET = 0.6, 0.4  # of the HBM roofline at the largest batch; of peak FLOP/s
COLUMNS = ("measurement", "model", "batch", "tokens_per_s", "decode_tokens_per_s", "roofline_tokens_per_s",
           "fraction_of_roofline", "seconds", "mfu", "update_mfu", "episodes_per_s", "meets_target", "compile_s",
           "peak_memory_gib", "note")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one run measures."""
  models: tuple[str, ...]  # decode and grpo, in this order
  batches: tuple[int, ...]  # decode
  prompt_len: int  # decode
  new_tokens: int  # decode
  decode_dtype: str  # decode params and compute
  grpo: grpo_step.Workload
  multiturn_model: str
  multiturn: multiturn.Workload
  memory_model: str
  memory_tokens: int
  memory_block: int
  repeats: int  # timed calls after the first
  breakdown: bool = True  # grpo: also the rollout and the update alone (two more compiles)
  compute_dtype: str = "bfloat16"  # grpo and multiturn (float32 master params)


FULL = Plan(models=("qwen2.5-0.5b", "qwen3-1.7b"), batches=(1, 64, 256), prompt_len=128, new_tokens=128,
            decode_dtype="bfloat16", grpo=grpo_step.Workload(8, 8, 128, 128), multiturn_model="qwen2.5-0.5b",
            multiturn=multiturn.Workload(episodes=128, turns=4, gen_tokens=32, obs_tokens=8, prompt_len=32),
            memory_model="qwen3-1.7b", memory_tokens=4096, memory_block=512, repeats=2)
DRY_RUN = Plan(models=("tiny",), batches=(1, 4), prompt_len=8, new_tokens=6, decode_dtype="float32",
               grpo=grpo_step.Workload(2, 2, 8, 6), multiturn_model="tiny",
               multiturn=multiturn.Workload(episodes=2, turns=2, gen_tokens=4, obs_tokens=8, prompt_len=16),
               memory_model="tiny", memory_tokens=64, memory_block=32, repeats=1, breakdown=False,
               compute_dtype="float32")


def chip(kind: str) -> tuple[str, float | None, float | None]:
  """(slug, HBM bytes/s, peak dense bf16 FLOP/s) of a device kind; an unknown one: (its slug, None, None)."""
  kind = kind.lower()
  for slug, parts, hbm, flops in CHIPS:
    if all(p in kind for p in parts):
      return slug, hbm, flops
  return "cpu" if kind == "cpu" else re.sub(r"[^a-z0-9]+", "-", kind).strip("-")[:32] or "unknown", None, None


def model_config(name: str, param_dtype: str, dtype: str) -> models.ModelConfig:
  return models.preset(name, dtype=dtype, param_dtype=param_dtype, attention="auto", scan_layers=True,
                       remat="block")


def decode_bytes(cfg: models.ModelConfig, batch: int, context: float) -> float:
  """Bytes one decode step must read: the weights (an untied input embedding only at the batch's rows:
  not counted) and the KV cache over `context` slots."""
  weights = cfg.num_params() - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model)
  kv = batch * cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * context
  return weights * jnp.dtype(cfg.weight_dtype).itemsize + kv * jnp.dtype(cfg.compute_dtype).itemsize


def peak_memory_gib() -> float | None:
  """The device's peak bytes in use so far (GiB), None where the backend keeps no stats."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # noqa: BLE001 - some backends raise instead of returning None
    return None
  peak = (stats or {}).get("peak_bytes_in_use")
  return None if peak is None else peak / GiB


class Models:
  """One random-weight model at a time, reused by consecutive measurements of the same config."""

  def __init__(self):
    self.key, self.lm = None, None

  def get(self, name: str, param_dtype: str, dtype: str) -> models.LM:
    key = (name, param_dtype, dtype)
    if key != self.key:
      self.drop()
      self.lm, self.key = models.create(model_config(name, param_dtype, dtype), seed=0), key
    return self.lm

  def drop(self):
    self.key = self.lm = None
    gc.collect()


def decode(lm: models.LM, model: str, batch: int, plan: Plan, hbm: float | None) -> dict:
  cfg, P, N = lm.config, plan.prompt_len, plan.new_tokens
  prompt_BxP = generate.prompt(model, cfg, batch, P)
  jarl = generate.Jarl(lm)
  full = common.time_call(jarl.generator(prompt_BxP, N), plan.repeats)
  one = common.time_call(jarl.generator(prompt_BxP, 1), plan.repeats)
  step_s = (full.median_s - one.median_s) / (N - 1)
  row = dict(dtype=cfg.param_dtype, prompt_len=P, new_tokens=N, tokens_per_s=batch * N / full.median_s,
             seconds=full.median_s, compile_s=full.compile_s, times_s=full.times_s, prefill_call_s=one.median_s)
  if step_s <= 0:  # a tiny dry run on a loaded CPU
    return row | dict(note="decode steps within the timing noise")
  row.update(ms_per_step=1e3 * step_s, decode_tokens_per_s=batch / step_s)
  bytes_per_step = decode_bytes(cfg, batch, P + N / 2)  # steps 1..N-1 attend over P + i slots
  row["bytes_per_step"] = bytes_per_step
  if hbm:
    row["roofline_tokens_per_s"] = batch / (bytes_per_step / hbm)
    row["fraction_of_roofline"] = row["decode_tokens_per_s"] / row["roofline_tokens_per_s"]
    if batch == max(plan.batches):
      row["meets_target"] = row["fraction_of_roofline"] >= DECODE_TARGET
  return row


@contextlib.contextmanager
def grpo_algo(**changes):
  """grpo_step.Jarl with grpo_step.ALGO's fields changed (its constructor reads the module's ALGO)."""
  old = grpo_step.ALGO
  grpo_step.ALGO = dataclasses.replace(old, **changes)
  try:
    yield
  finally:
    grpo_step.ALGO = old


def grpo(lm: models.LM, plan: Plan, logits_chunk: int, peak: float | None, slug: str) -> dict:
  w = plan.grpo
  with grpo_algo(logits_chunk=logits_chunk):
    jarl = grpo_step.Jarl(lm, w)
  first = jarl.step()
  print(f"    first iteration (compile) {first:.1f} s", flush=True)
  t = common.Timing(first, [jarl.step() for _ in range(plan.repeats)])
  flops = grpo_step.model_flops(lm.config, w)
  row = dict(batch=w.batch, group_size=w.group_size, prompt_len=w.prompt_len, completion_tokens=w.completion_tokens,
             logits_chunk=logits_chunk, seconds=t.median_s, times_s=t.times_s, compile_s=t.compile_s,
             completion_tokens_per_s=w.batch * w.completion_tokens / t.median_s, model_flops=flops,
             mfu=peak and flops / t.median_s / peak)
  if not plan.breakdown:
    return row
  try:  # the update alone (not donated: its state twice in memory) may not fit where the iteration did
    row["rollout_s"], row["update_s"] = jarl.breakdown(plan.repeats)
    row["update_mfu"] = peak and 0.75 * flops / row["update_s"] / peak
    if row["update_mfu"] is not None and slug in H100_CLASS:
      row["meets_target"] = row["update_mfu"] >= UPDATE_MFU_TARGET
  except Exception as e:  # noqa: BLE001 - recorded, the iteration's numbers stand
    row["note"] = f"update alone failed: {type(e).__name__}: {str(e)[:300]}"
  return row


def multiturn_rollout(lm: models.LM, plan: Plan) -> dict:
  w = plan.multiturn
  tok = multiturn.BenchTokenizer(lm.config.vocab_size)
  jarl = multiturn.Jarl(lm, multiturn.DigitCount(Codec.from_tokenizer(tok), w), w)
  start = time.perf_counter()
  traj = jarl()
  first = time.perf_counter() - start
  jarl.check(traj, tok)
  del traj
  t = common.Timing(first, [])
  for _ in range(plan.repeats):
    start = time.perf_counter()
    jarl()
    t.times_s.append(time.perf_counter() - start)
  return dict(batch=w.episodes, turns=w.turns, gen_tokens_per_turn=w.gen_tokens, obs_tokens_per_turn=w.obs_tokens,
              prompt_len=w.prompt_len, episodes_per_s=w.episodes / t.median_s, tokens_per_s=w.generated / t.median_s,
              seconds=t.median_s, times_s=t.times_s, compile_s=t.compile_s)


def compiled_memory(plan: Plan, logits_chunk: int) -> dict:
  row = memory.measure(plan.memory_model, "all", rows=1, tokens=plan.memory_tokens, block=plan.memory_block,
                       logits_chunk=logits_chunk)
  return {k: v for k, v in row.items() if k not in ("model", "variant")} | dict(batch=1, note='memory.py "all"')


def measurements(plan: Plan, pool: Models, logits_chunk: int, hbm, peak, slug):
  """(row fields that name it, thunk returning its measured fields), in running order."""
  out = []
  for model in plan.models:
    for batch in plan.batches:
      out.append((dict(measurement="decode", model=model, batch=batch),
                  lambda m=model, b=batch: decode(pool.get(m, plan.decode_dtype, plan.decode_dtype), m, b, plan, hbm)))
  grpo_rows = [(dict(measurement="grpo", model=m),
                lambda m=m: grpo(pool.get(m, "float32", plan.compute_dtype), plan, logits_chunk, peak, slug))
               for m in plan.models]
  out += grpo_rows[:1]
  out.append((dict(measurement="multiturn", model=plan.multiturn_model),
              lambda: multiturn_rollout(pool.get(plan.multiturn_model, "float32", plan.compute_dtype), plan)))
  out += grpo_rows[1:]
  out.append((dict(measurement="memory", model=plan.memory_model), lambda: compiled_memory(plan, logits_chunk)))
  return out


def run(todo, budget_s: float) -> tuple[list[dict], list[str]]:
  """Every measurement in turn, each wrapped; none starts after budget_s seconds. Returns (rows, skipped)."""
  rows, skipped, start = [], [], time.perf_counter()
  for name, thunk in todo:
    label = " ".join(str(v) for v in name.values())
    elapsed = time.perf_counter() - start
    if elapsed > budget_s:
      skipped.append(label)
      rows.append(name | dict(note=f"skipped: {elapsed:.0f} s > the {budget_s:.0f} s budget"))
      print(f"[{elapsed:6.1f} s] {label}: skipped (time budget)", flush=True)
      continue
    print(f"[{elapsed:6.1f} s] {label} ...", flush=True)
    began = time.perf_counter()
    try:
      row = name | thunk()
    except Exception as e:  # noqa: BLE001 - one failure (OOM, unsupported kernel) must not end the run
      traceback.print_exc()
      row = name | dict(note=f"error: {type(e).__name__}: {str(e)[:500]}")
    row.update(peak_memory_gib=peak_memory_gib(), wall_s=time.perf_counter() - began)
    rows.append(row)
    jax.clear_caches()  # the measurement's executables (its arrays went with its locals)
    shown = {k: row[k] for k in COLUMNS[3:] if row.get(k) is not None}
    print(f"[{time.perf_counter() - start:6.1f} s] {label}: " + ", ".join(
        f"{k} {common._cell(v)}" for k, v in shown.items()), flush=True)
  return rows, skipped


def main(argv=None) -> pathlib.Path:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dry-run", action="store_true", help="tiny shapes, float32, on whatever device (CPU)")
  parser.add_argument("--results-dir", default=str(common.RESULTS))
  parser.add_argument("--budget-s", type=float, default=450.0, help="start no measurement after this many seconds")
  parser.add_argument("--logits-chunk", type=int, default=None, help="the update's algo.logits_chunk (default 128; "
                      "dry run 4); 0: all logits at once")
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  plan = DRY_RUN if args.dry_run else FULL
  logits_chunk = (4 if args.dry_run else 128) if args.logits_chunk is None else args.logits_chunk
  kind = jax.devices()[0].device_kind
  slug, hbm, peak = chip(kind)
  machine = common.machine_info()
  machine.update(chip=slug, hbm_bytes_per_s=hbm, peak_bf16_flops=peak, budget_s=args.budget_s)
  if jax.default_backend() == "gpu":
    machine["env"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] = os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"]
  print(f"{kind} ({jax.default_backend()}, chip {slug}): HBM {hbm} B/s, peak bf16 {peak} FLOP/s; "
        f"{'dry run' if args.dry_run else 'full run'}, budget {args.budget_s:.0f} s", flush=True)
  start = time.perf_counter()
  pool = Models()
  fast_compile = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", fast_compile or args.dry_run)  # dry run: compiles 2x faster
  try:
    rows, skipped = run(measurements(plan, pool, logits_chunk, hbm, peak, slug), args.budget_s)
  finally:
    jax.config.update("jax_disable_most_optimizations", fast_compile)
    pool.drop()
  machine["benchmark_seconds"] = round(time.perf_counter() - start)
  machine["skipped"] = skipped
  notes = [f"Command: `python benchmarks/accelerator.py{''.join(' ' + a for a in argv)}` on {kind} "
           f"({machine['benchmark_seconds']} s). See the docstring of benchmarks/accelerator.py for the workloads "
           "and what each column measures."]
  if hbm is None:
    notes.append(f"Device kind {kind!r} is not in the chip table: no HBM roofline, no MFU.")
  if skipped:
    notes.append(f"Skipped (time budget {args.budget_s:.0f} s): {', '.join(skipped)}.")
  name = f"accelerator_{'dryrun_' if args.dry_run else ''}{slug}"
  old = common.RESULTS
  common.RESULTS = pathlib.Path(args.results_dir)
  try:
    return common.write_results(name, machine, rows, COLUMNS, notes=" ".join(notes))
  finally:
    common.RESULTS = old


if __name__ == "__main__":
  main()
