"""The update's memory at real model sizes and context lengths, from XLA's own buffer assignment.

    python benchmarks/memory.py                                   # qwen2.5-0.5b and qwen3-1.7b, 4096 slots
    python benchmarks/memory.py --models qwen3-8b --tokens 8192   # any preset, any length
    python benchmarks/memory.py --dry-run                         # tiny shapes, under a minute (tested)

Nothing is allocated: each variant's gradient of the policy loss (the learner's own forward, log-prob and
entropy; float32 params, bfloat16 compute, one micro-batch of `--rows` rows x `--tokens` slots) is lowered
from `jax.ShapeDtypeStruct`s and compiled for this machine's backend, and the compiled program's memory
analysis gives its temporaries: what the backward pass keeps plus the working set. Beside it, the
planned update activations (`jarl.plan.update_activations`, what `jarl plan` counts), and the prefill of
a `--tokens`-slot prompt into an empty cache of twice that, the last slot's logits only (the rollout's
biggest forward: a forced chunk). Variants:

  baseline             attention "xla", layers unrolled, no remat, the whole vocabulary's logits at once
  chunked              + attention "chunked" (blockwise online softmax, blocks of 512)
  chunked+scan+remat   + model.scan_layers and model.remat="block" (each block keeps only its input)
  all                  + algo.logits_chunk=256 (the output head 256 slots at a time)

On CPU, XLA's numbers are the CPU compiler's (it may keep bfloat16 values in float32); a GPU or TPU
compile of the same program gives its own, which `benchmarks/accelerator.py` records.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import common
from jarl import learner, models, plan
from jarl.models.transformer import KVCache

GiB = 2**30
VARIANTS = {  # name: (model fields, algo.logits_chunk)
    "baseline": ({}, 0),
    "chunked": ({"attention": "chunked"}, 0),
    "chunked+scan+remat": ({"attention": "chunked", "scan_layers": True, "remat": "block"}, 0),
    "all": ({"attention": "chunked", "scan_layers": True, "remat": "block"}, 256),
}
COLUMNS = ("model", "variant", "rows", "tokens", "update_temp_gib", "planned_gib", "prefill_temp_gib",
           "compile_s")
DRY_RUN = dict(models=["tiny"], tokens=256, rows=2, block=64, logits_chunk=32)


def _compiled_temp(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def update_temp(cfg: models.ModelConfig, rows: int, tokens: int, logits_chunk: int) -> int:
  """Temporaries of the compiled gradient of a policy-gradient loss with entropy over rows x tokens slots."""
  graphdef, shapes, axes = models.abstract(cfg)
  lm = models.LM(cfg, "lm", graphdef, shapes, axes)
  slot = lambda dtype: jax.ShapeDtypeStruct((rows, tokens), dtype)
  batch = dict(tokens=slot(jnp.int32), positions=slot(jnp.int32), valid=slot(jnp.bool_))

  def loss(params, batch, advantages_BxT):
    logp_BxT, entropy_BxT, _ = learner._policy_outputs(lm, params, batch, None, logits_chunk=logits_chunk)
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", default=["qwen2.5-0.5b", "qwen3-1.7b"])
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
  parser.add_argument("--tokens", type=int, default=4096, help="slots per row")
  parser.add_argument("--rows", type=int, default=1, help="rows per micro-batch")
  parser.add_argument("--block", type=int, default=512, help="model.attention_block")
  parser.add_argument("--logits-chunk", type=int, default=256, help='algo.logits_chunk of the "all" variant')
  parser.add_argument("--dry-run", action="store_true", help=f"tiny shapes ({DRY_RUN}); results not written")
  args = parser.parse_args()
  if args.dry_run:
    for key, value in DRY_RUN.items():
      setattr(args, key, value)
  rows = [measure(m, v, args.rows, args.tokens, args.block, args.logits_chunk)
          for m in args.models for v in args.variants]
  if args.dry_run:
    print(common.markdown_table(rows, COLUMNS))
    return
  common.write_results("memory", common.machine_info(), rows, COLUMNS, notes=(
      f"{jax.default_backend()} compile; bfloat16 compute, float32 params; one micro-batch of {args.rows} row(s) "
      f"x {args.tokens} slots; update = gradient of the policy loss with entropy; prefill = {args.tokens} prompt "
      f"slots into an empty {2 * args.tokens}-slot cache. Command: python benchmarks/memory.py "
      f"--models {' '.join(args.models)} --tokens {args.tokens} --rows {args.rows}"))


if __name__ == "__main__":
  main()
