"""Memory at real model sizes and context lengths, from XLA's own buffer assignment.

    python benchmarks/memory.py                                    # every recipe, 2k / 4k / 8k tokens, every variant
    python benchmarks/memory.py --replan                           # no compile: the kept rows with today's plan
    python benchmarks/memory.py --recipes qwen3_8b_v5p16 --tokens 4096 --variants after
    python benchmarks/memory.py --ladder                           # the update alone, variant by variant
    python benchmarks/memory.py --ladder --dry-run                 # tiny shapes, under a minute (tested)

Recipes (the default; results/memory.json): for each config in configs/recipes/, its episodes
stretched to `--tokens` slots (agent.plan_budget), one whole training iteration (rollout, rewards,
update: `jarl.train.compile_iteration`) is compiled ahead of time from abstract inputs on a
fake-device CPU mesh of the recipe's shape (`plan.n_devices` devices, one subprocess per row:
XLA_FLAGS is read once per process), nothing allocated. Per device: XLA's figure (arguments +
temporaries + outputs not aliased to donated arguments), `jarl plan`'s peak for the same config,
the device's memory (`plan.device`), whether XLA's figure fits it, and the compile time. Variants:

  before     the recipes until 2026-12: attention "xla", layers unrolled, no remat, whole-vocabulary logits
  after      the recipe as written: model.attention "auto", model.scan_layers, model.remat "block",
             algo.logits_chunk 512
  after_f32  after, computing in float32: the plan's check against XLA:CPU without the CPU's own copies

XLA:CPU is a proxy for the TPU / GPU compile: it computes bfloat16 dots and collectives in float32
(a float32 copy of what it gathers or multiplies), so its figure for a bfloat16 model is above what
an accelerator keeps; `benchmarks/accelerator.py` records a device's own peak when one runs.

Ladder (`--ladder`; results/memory_update.json): each variant's gradient of the policy loss (the
learner's own forward, log-prob and entropy; float32 params, bfloat16 compute, one micro-batch of
`--rows` rows x `--tokens` slots) and the prefill of a `--tokens`-slot prompt into an empty cache of
twice that (the last slot's logits only: the rollout's biggest forward, a forced chunk), with the
planned update activations (`jarl.plan.update_activations`) beside them. Variants:

  baseline             attention "xla", layers unrolled, no remat, the whole vocabulary's logits at once
  chunked              + attention "chunked" (blockwise online softmax, blocks of 512)
  chunked+scan+remat   + model.scan_layers and model.remat="block" (each block keeps only its input)
  all                  + algo.logits_chunk=256 (the output head 256 slots at a time)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

import common
from jarl import envs, forward, models, plan, train
from jarl.agent import AgentConfig, make_layout
from jarl.models.transformer import KVCache
from jarl.tokenizer import load_tokenizer

GiB = 2**30
RECIPES = sorted(p.stem for p in (common.RESULTS.parent.parent / "configs" / "recipes").glob("*.py"))
BEFORE = {"model.attention": "xla", "model.scan_layers": False, "model.remat": "none", "algo.logits_chunk": 0}
RECIPE_VARIANTS = {"before": BEFORE, "after": {}, "after_f32": {"model.dtype": "float32"}}
RECIPE_COLUMNS = ("recipe", "tokens", "variant", "devices", "xla_gib", "temp_gib", "plan_gib", "plan_vs_xla",
                  "device_gib", "fits", "plan_fits", "compile_s")
VARIANTS = {  # the ladder's: name: (model fields, algo.logits_chunk)
    "baseline": ({}, 0),
    "chunked": ({"attention": "chunked"}, 0),
    "chunked+scan+remat": ({"attention": "chunked", "scan_layers": True, "remat": "block"}, 0),
    "all": ({"attention": "chunked", "scan_layers": True, "remat": "block"}, 256),
}
COLUMNS = ("model", "variant", "rows", "tokens", "update_temp_gib", "planned_gib", "prefill_temp_gib",
           "compile_s")
DRY_RUN = dict(models=["tiny"], tokens=256, rows=2, block=64, logits_chunk=32)


def recipe_config(recipe: str, tokens: int, variant: str):
  """configs/recipes/<recipe>.py with its episodes stretched to ~`tokens` slots (agent.plan_budget, counted
  as `jarl plan` counts them) and the variant's settings."""
  config = common.apply_overrides(common.config_module(f"recipes/{recipe}").get_config(), RECIPE_VARIANTS[variant])
  length = lambda budget: episode_slots(config, plan_budget=budget)
  per_slot = length(2) - length(1)  # slots per plan-budget token (one per turn)
  config.agent.plan_budget = max(1, 1 + (tokens - length(1)) // per_slot)
  return config


def episode_slots(config, **agent) -> int:
  """An episode's token slots under `config` (with `agent` fields replaced), counted as `jarl plan` counts."""
  tokenizer = load_tokenizer(config.get("plan", {}).get("tokenizer") or config.tokenizer)
  env = envs.make(config.env.name, tokenizer=tokenizer, **dict(config.env.kwargs))
  return make_layout(AgentConfig(**dict(config.agent, **agent)), env).total_len


def measure_recipe(config, recipe: str = "", variant: str = "") -> dict:
  """One iteration of `config` compiled for this process's devices: XLA's figure per device, with the plan's."""
  start = time.perf_counter()
  analysis = train.compile_iteration(config).memory_analysis()
  compile_s = time.perf_counter() - start
  xla = (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes + analysis.output_size_in_bytes
         - analysis.alias_size_in_bytes)
  row = dict(recipe=recipe, tokens=episode_slots(config), variant=variant, devices=jax.device_count(),
             xla_bytes_per_device=xla, temp_gib=analysis.temp_size_in_bytes / GiB, compile_s=round(compile_s, 1))
  return with_plan(row, config)


def with_plan(row: dict, config) -> dict:
  """The row with `jarl plan`'s peak for `config` on the row's devices, the device memory and the verdicts."""
  planned = plan.plan(config, n_devices=row["devices"])
  xla, device = row["xla_bytes_per_device"], planned.device_bytes
  return dict(row, plan_bytes_per_device=planned.peak, device_bytes=device,
              fits=None if device is None else xla <= device, plan_fits=planned.fits, xla_gib=xla / GiB,
              plan_gib=planned.peak / GiB,
              plan_vs_xla=f"{planned.peak / xla - 1:+.0%}", device_gib=None if device is None else device / GiB)


def run_recipe(recipe: str, tokens: int, variant: str) -> dict:
  """`measure_recipe` in a subprocess with the recipe's device count faked (XLA_FLAGS is read at jax's start)."""
  n = common.config_module(f"recipes/{recipe}").get_config().plan.n_devices
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, __file__, "--one", recipe, str(tokens), variant], env=env, text=True,
                       capture_output=True, check=False)
  if out.returncode:
    raise RuntimeError(f"{recipe} at {tokens} tokens ({variant}) failed:\n{out.stderr[-3000:]}")
  row = json.loads(out.stdout.strip().splitlines()[-1])
  print(common.markdown_table([row], RECIPE_COLUMNS).splitlines()[-1], flush=True)
  return row


def _compiled_temp(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def update_temp(cfg: models.ModelConfig, rows: int, tokens: int, logits_chunk: int) -> int:
  """Temporaries of the compiled gradient of a policy-gradient loss with entropy over rows x tokens slots."""
  graphdef, shapes, axes = models.abstract(cfg)
  lm = models.LM(cfg, "lm", graphdef, shapes, axes)
  slot = lambda dtype: jax.ShapeDtypeStruct((rows, tokens), dtype)
  batch = dict(tokens=slot(jnp.int32), positions=slot(jnp.int32), valid=slot(jnp.bool_))

  def loss(params, batch, advantages_BxT):
    logp_BxT, entropy_BxT, _ = forward.policy_outputs(lm, params, batch, None, logits_chunk=logits_chunk)
    return -jnp.sum(logp_BxT * advantages_BxT) - 0.01 * jnp.sum(entropy_BxT)
  return _compiled_temp(jax.grad(loss), shapes, batch, slot(jnp.float32))


def prefill_temp(cfg: models.ModelConfig, rows: int, tokens: int) -> int:
  """Temporaries of one forward of rows x tokens prompt slots into an empty cache of 2 x tokens slots."""
  graphdef, shapes, axes = models.abstract(cfg)
  lm = models.LM(cfg, "lm", graphdef, shapes, axes)
  cache = jax.eval_shape(lambda: KVCache.init(cfg, rows, 2 * tokens))
  tokens_BxT = jax.ShapeDtypeStruct((rows, tokens), jnp.int32)

  def prefill(params, tokens_BxT, cache):
    positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    h_BxTxD, cache = lm.apply(params, tokens_BxT, positions_BxT, cache, jnp.ones(tokens_BxT.shape, bool),
                              method="hidden")
    return lm.apply(params, h_BxTxD[:, -1:], method="logits"), cache  # the rollout's forced chunk
  return _compiled_temp(prefill, shapes, tokens_BxT, cache)


def measure(model: str, variant: str, rows: int, tokens: int, block: int, logits_chunk: int) -> dict:
  fields, chunk = VARIANTS[variant]
  chunk = chunk and logits_chunk
  cfg = models.preset(model, dtype="bfloat16", param_dtype="float32", attention_block=block,
                      max_seq_len=max(2 * tokens, 1024), **fields)
  start = time.perf_counter()
  update = update_temp(cfg, rows, tokens, chunk)
  compile_s = time.perf_counter() - start
  row = dict(model=model, variant=variant, rows=rows, tokens=tokens, update_temp_gib=update / GiB,
             planned_gib=plan.update_activations(cfg, rows, tokens, logits_chunk=chunk) / GiB,
             prefill_temp_gib=prefill_temp(cfg, rows, tokens) / GiB, compile_s=compile_s)
  print(row, flush=True)
  return row


def ladder(args) -> None:
  if args.dry_run:
    for key, value in DRY_RUN.items():
      setattr(args, key, value)
  rows = [measure(m, v, args.rows, args.tokens[0], args.block, args.logits_chunk)
          for m in args.models for v in args.variants or VARIANTS]
  if args.dry_run:
    print(common.markdown_table(rows, COLUMNS))
    return
  common.write_results("memory_update", common.machine_info(), rows, COLUMNS, notes=(
      f"{jax.default_backend()} compile; bfloat16 compute, float32 params; one micro-batch of {args.rows} row(s) "
      f"x {args.tokens[0]} slots; update = gradient of the policy loss with entropy; prefill = {args.tokens[0]} "
      f"prompt slots into an empty {2 * args.tokens[0]}-slot cache. Command: python benchmarks/memory.py --ladder "
      f"--models {' '.join(args.models)} --tokens {args.tokens[0]} --rows {args.rows}"))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
  parser.add_argument("--tokens", nargs="+", type=int, default=[2048, 4096, 8192], help="slots per episode")
  parser.add_argument("--variants", nargs="+", choices=list(RECIPE_VARIANTS) + list(VARIANTS))
  parser.add_argument("--replan", action="store_true", help="no compile: recompute the plan of the kept rows")
  parser.add_argument("--one", nargs=3, metavar=("RECIPE", "TOKENS", "VARIANT"), help=argparse.SUPPRESS)
  parser.add_argument("--ladder", action="store_true", help="the update alone per variant, for --models")
  parser.add_argument("--models", nargs="+", default=["qwen2.5-0.5b", "qwen3-1.7b"])
  parser.add_argument("--rows", type=int, default=1, help="--ladder: rows per micro-batch")
  parser.add_argument("--block", type=int, default=512, help="--ladder: model.attention_block")
  parser.add_argument("--logits-chunk", type=int, default=256, help='--ladder: algo.logits_chunk of "all"')
  parser.add_argument("--dry-run", action="store_true", help=f"--ladder on tiny shapes ({DRY_RUN}); not written")
  args = parser.parse_args()
  if args.one:
    recipe, tokens, variant = args.one
    row = measure_recipe(recipe_config(recipe, int(tokens), variant), recipe, variant)
    command = f"python benchmarks/memory.py --recipes {recipe} --tokens {tokens} --variants {variant}"
    print(json.dumps(dict(row, target_tokens=int(tokens), command=command)))
    return
  if args.ladder or args.dry_run:
    return ladder(args)
  # rows of recipes, lengths and variants this command does not measure are kept from the results file
  variants = args.variants or list(RECIPE_VARIANTS)
  path = common.RESULTS / "memory.json"
  old = [r for r in json.loads(path.read_text())["rows"] if "recipe" in r] if path.exists() else []
  new = []
  for recipe in [] if args.replan else args.recipes:
    for tokens in args.tokens:
      for variant in variants:
        try:
          new.append(run_recipe(recipe, tokens, variant))
        except RuntimeError as e:  # one failed compile loses no other row
          print(e, file=sys.stderr)
  done = {(r["recipe"], r["variant"], r["target_tokens"]) for r in new}
  rows = [r for r in old if (r["recipe"], r["variant"], r["target_tokens"]) not in done] + new
  # the plan of every row, kept ones included, from today's jarl.plan (a refit needs no recompile)
  rows = [with_plan(r, recipe_config(r["recipe"], r["target_tokens"], r["variant"])) for r in rows]
  rows.sort(key=lambda r: (RECIPES.index(r["recipe"]), r["target_tokens"], r["variant"] != "before"))
  common.write_results("memory", common.machine_info(), rows, RECIPE_COLUMNS, notes=(
      f"{jax.default_backend()} compile (XLA:CPU: a proxy, see benchmarks/memory.py) on fake devices, one whole "
      "iteration per row. xla_gib: XLA's arguments + temporaries + outputs not aliased, per device; temp_gib: its "
      "temporaries; plan_gib: `jarl plan`'s peak; fits: xla_gib <= device_gib. after: the recipe as written; "
      "before: " + ", ".join(f"{k}={v}" for k, v in BEFORE.items()) + "; plan_fits: plan_gib <= device_gib (XLA:CPU "
      "keeps float32 copies of bfloat16 values an accelerator does not: see benchmarks/memory.py). Each row's "
      "command is in memory.json."))


if __name__ == "__main__":
  main()
