"""Generation throughput: jarl's sampler, transformers' `generate` and Tunix's sampler, side by side.

    python benchmarks/generate.py            # the full run (~15 min on 2 CPU cores)
    python benchmarks/generate.py --quick    # smoke test (tiny, batch 8, 16 tokens; writes nothing)

Workload: presets `tiny` and `small` (Llama-style), float32, random weights, prompts of 32
tokens, batches of 64 and 8, 64 and 128 new tokens, sampling at temperature 1 over the
full vocabulary, and every row generates all its tokens (no early stop). transformers
runs jarl's weights (exported with `save_pretrained`) in torch on the CPU; Tunix runs its
own `Llama3` module with the same shapes and random weights.

Columns: tokens_per_s = batch x new tokens / wall time of one whole call (prefill
included), the median of `--repeats` calls, which go round-robin over the systems so that
all of them see the same machine load; compile_s = what the first call took beyond
a typical one (XLA compilation, torch warm-up); ms_per_step = (t(N) - t(1)) / (N - 1),
one decode step without the prefill; mfu = model FLOPs of the generated tokens (2 x
non-embedding params + attention over the context) / wall time / the matmul peak measured
in the same run; decode_mfu = the same for one decode step; matmul_floor_ms (jarl rows) =
one decode step's weight matmuls alone at this batch, jitted (`matmul_floor_s`: q|k|v, o,
gate|up, down and the LM head, no attention, norms or sampling): about the least a float32
XLA decoder can take per step on this machine; load_average = the highest
1-minute load seen during the timed calls (near or above the core count: other
processes shared the CPU, and torch's threads suffer from that more than XLA's).

Tunix is optional. It pins heavy dependencies, so install it without them in a virtualenv
that sees this environment, and run the benchmark with that python:

    python -m venv --system-site-packages ~/venv-tunix
    ~/venv-tunix/bin/pip install --no-deps google-tunix==0.1.7 jaxtyping wadler-lindig google-metrax clu \\
        sentencepiece perfetto pandas
    ~/venv-tunix/bin/python benchmarks/generate.py

Without it the Tunix rows say "skipped" and why. Results: results/generate.json and .md.

On a machine shared with other jobs torch's OpenMP threads spin-wait for each other and
stall (calls 10-50x slower than on a quiet machine); run with OMP_WAIT_POLICY=PASSIVE
there. XLA does not use OpenMP. The results record the setting and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Sequence

import jax
import numpy as np

import common
from jarl import models, sampling

COLUMNS = ("system", "preset", "batch", "prompt_len", "new_tokens", "tokens_per_s", "ms_per_step", "compile_s",
           "mfu", "decode_mfu", "speedup_vs_transformers", "matmul_floor_ms", "load_average", "note")


def flops_per_token(cfg: models.ModelConfig, context: float) -> float:
  """Forward FLOPs of one token: 2 x the matmul params (embedding lookup excluded) + attention."""
  matmul_params = cfg.num_params() - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model)
  return 2 * matmul_params + 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim * context


class Jarl:
  name = "jarl"

  def __init__(self, lm: models.LM):
    self.lm = lm

  def generator(self, prompt_BxP: np.ndarray, new_tokens: int):
    cfg = sampling.SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, early_stop=False)
    run = sampling.make_generate(self.lm, cfg, prompt_BxP.shape[1])
    prompt, valid = jax.numpy.asarray(prompt_BxP), jax.numpy.ones(prompt_BxP.shape, bool)
    keys = iter(range(10 ** 6))
    return lambda: jax.block_until_ready(run(self.lm.params, prompt, valid, jax.random.key(next(keys))))


class Transformers:
  name = "transformers"

  def __init__(self, lm: models.LM):
    import torch
    import transformers
    self.torch = torch
    with tempfile.TemporaryDirectory() as path:
      models.save_pretrained(lm, path)
      self.model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    self.model.generation_config.eos_token_id = None  # never stop early
    self.note = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
                 f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}")

  def generator(self, prompt_BxP: np.ndarray, new_tokens: int):
    ids = self.torch.tensor(prompt_BxP, dtype=self.torch.long)
    mask = self.torch.ones_like(ids)

    def run():
      with self.torch.inference_mode():
        out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                  top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
      assert out.shape[1] == prompt_BxP.shape[1] + new_tokens
    return run


class Tunix:
  name = "tunix"

  def __init__(self, lm: models.LM):
    from flax import nnx
    from tunix.generate import sampler
    from tunix.models.llama3 import model
    cfg = lm.config
    self.cfg, self.sampler_lib = cfg, sampler
    self.model = model.Llama3(model.ModelConfig(
        num_layers=cfg.n_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.d_model, hidden_dim=cfg.mlp_dim,
        num_heads=cfg.n_heads, head_dim=cfg.head_dim, num_kv_heads=cfg.n_kv_heads, rope_theta=int(cfg.rope_theta),
        norm_eps=cfg.rms_norm_eps), rngs=nnx.Rngs(0))
    self.note = "own random weights"

  class _Tokenizer:  # prompts are written as token ids, "5 17 3 ..."; no BOS is added
    def __init__(self, vocab_size):
      self.vocab_size = vocab_size

    def encode(self, text, **_):
      return [int(t) for t in text.split()]

    def decode(self, ids, **_):
      return " ".join(map(str, ids))

    def bos_id(self):
      return 0

    def eos_id(self):
      return self.vocab_size + 1  # never sampled: no early stop

    def pad_id(self):
      return 0

  def generator(self, prompt_BxP: np.ndarray, new_tokens: int):
    B, P = prompt_BxP.shape
    cfg = self.cfg
    cache = self.sampler_lib.CacheConfig(cache_size=P + new_tokens, num_layers=cfg.n_layers,
                                         num_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim)
    sampler = self.sampler_lib.Sampler(self.model, self._Tokenizer(cfg.vocab_size), cache)
    prompts = [" ".join(map(str, row)) for row in prompt_BxP]
    seeds = iter(range(10 ** 6))

    def run():
      out = sampler(prompts, max_generation_steps=new_tokens, max_prompt_length=P, temperature=1.0, top_p=1.0,
                    top_k=None, seed=next(seeds), eos_tokens=[cfg.vocab_size + 1])
      assert len(out.tokens) == B and len(out.tokens[0]) == new_tokens
    return run


def matmul_floor_s(cfg: models.ModelConfig, batch: int, repeats: int = 20) -> float:
  """Median seconds of one decode step's weight matmuls alone at this batch: per layer [B, D] x the
  fused q|k|v, o, fused gate|up and down kernels (residual adds between them), then the LM head;
  no attention, norms or sampling: about the least a float32 XLA decode step can take here."""
  D, F, V, L = cfg.d_model, cfg.mlp_dim, cfg.vocab_size, cfg.n_layers
  qkv, att = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, cfg.n_heads * cfg.head_dim
  shapes = [(D, qkv), (att, D), (D, 2 * F), (F, D)]
  keys = jax.random.split(jax.random.key(0), 4 * L + 2)
  weights = [[jax.random.normal(keys[4 * i + j], s) * 0.02 for j, s in enumerate(shapes)] for i in range(L)]
  head = jax.random.normal(keys[-2], (D, V)) * 0.02
  x = jax.random.normal(keys[-1], (batch, D))

  @jax.jit
  def step(x, weights, head):
    for w_qkv, w_o, w_gu, w_down in weights:
      x = x + (x @ w_qkv)[:, :att] @ w_o
      gate_up = x @ w_gu
      x = x + (gate_up[:, :F] * gate_up[:, F:]) @ w_down
    return x @ head
  return common.time_call(lambda: step(x, weights, head).block_until_ready(), repeats).median_s


def measure(systems: Sequence, preset: str, cfg: models.ModelConfig, batch: int, prompt_len: int,
            new_tokens: Sequence[int], repeats: int, peak: float) -> list[dict]:
  """Every system on one workload; the timed calls go round-robin so that all see the same load."""
  prompt_BxP = np.random.RandomState(0).randint(1, min(cfg.vocab_size, 256), (batch, prompt_len)).astype(np.int32)
  calls = {(s.name, n): s.generator(prompt_BxP, n) for s in systems for n in [1, *new_tokens]}
  first, times, loads = {}, {key: [] for key in calls}, []
  for key, call in calls.items():  # compile / warm up
    start = time.perf_counter()
    call()
    first[key] = time.perf_counter() - start
  for _ in range(repeats):
    loads.append(os.getloadavg()[0])
    for key, call in calls.items():
      start = time.perf_counter()
      call()
      times[key].append(time.perf_counter() - start)
  rows, floor_s = [], matmul_floor_s(cfg, batch)
  for s in systems:
    one = common.Timing(first[s.name, 1], times[s.name, 1])
    for n in new_tokens:
      t = common.Timing(first[s.name, n], times[s.name, n])
      step_s = (t.median_s - one.median_s) / (n - 1)
      generated_flops = batch * sum(flops_per_token(cfg, prompt_len + i + 1) for i in range(n))
      extra = dict(matmul_floor_ms=1e3 * floor_s) if s.name == "jarl" else {}
      rows.append(dict(system=s.name, preset=preset, batch=batch, prompt_len=prompt_len, new_tokens=n, **extra,
                       tokens_per_s=batch * n / t.median_s, ms_per_step=1e3 * step_s, compile_s=t.compile_s,
                       mfu=generated_flops / t.median_s / peak,
                       decode_mfu=batch * flops_per_token(cfg, prompt_len + n / 2) / step_s / peak,
                       seconds=t.times_s, first_call_s=t.first_s, load_average=max(loads),
                       note=getattr(s, "note", "")))
      print(f"  {s.name:12s} {preset:5s} batch {batch:3d} new {n:4d}: {rows[-1]['tokens_per_s']:9.0f} tokens/s, "
            f"{rows[-1]['ms_per_step']:7.2f} ms/step, compile {t.compile_s:5.1f} s", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="smoke test: tiny, batch 8, 16 new tokens, 2 repeats")
  parser.add_argument("--systems", default="jarl,transformers,tunix")
  parser.add_argument("--presets", default="tiny,small")
  parser.add_argument("--batches", default="64,8")
  parser.add_argument("--new-tokens", default="64,128")
  parser.add_argument("--prompt-len", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  if args.quick:
    args.presets, args.batches, args.new_tokens, args.repeats = "tiny", "8", "16", 2
  batches = [int(b) for b in args.batches.split(",")]
  new_tokens = [int(n) for n in args.new_tokens.split(",")]

  machine = common.machine_info()
  peak = common.matmul_peak_flops()
  machine["matmul_peak_flops"] = peak
  print(f"{machine['cpu']}, {machine['cores']} cores, load {machine['load_average_at_start']}, "
        f"float32 matmul peak {peak / 1e9:.0f} GFLOP/s", flush=True)
  systems = {"jarl": Jarl, "transformers": Transformers, "tunix": Tunix}
  rows = []
  start = time.perf_counter()
  for preset in args.presets.split(","):
    cfg = models.preset(preset, dtype="float32", param_dtype="float32")
    lm = models.create(cfg, seed=0)
    ready = []
    for name in args.systems.split(","):
      try:
        ready.append(systems[name](lm))
      except ImportError as e:
        rows += [dict(system=name, preset=preset, batch=b, prompt_len=args.prompt_len, new_tokens=n,
                      note=f"skipped: {e} (see the install line in this file's docstring)")
                 for b in batches for n in new_tokens]
        print(f"  {name}: skipped ({e})", flush=True)
    for batch in batches:
      rows += measure(ready, preset, cfg, batch, args.prompt_len, new_tokens, args.repeats, peak)
  base = {(r["preset"], r["batch"], r["new_tokens"]): r.get("tokens_per_s") for r in rows
          if r["system"] == "transformers"}
  for r in rows:
    key = (r["preset"], r["batch"], r["new_tokens"])
    if r.get("tokens_per_s") and base.get(key):
      r["speedup_vs_transformers"] = r["tokens_per_s"] / base[key]
  rows.sort(key=lambda r: (r["preset"] != "tiny", r["preset"], -r["batch"], r["new_tokens"], r["system"]))
  machine["benchmark_seconds"] = round(time.perf_counter() - start)
  if args.quick:  # a smoke test writes no results
    print(common.markdown_table(rows, COLUMNS))
    return
  env = "".join(f"{k}={v} " for k, v in machine["env"].items())
  common.write_results("generate", machine, rows, COLUMNS,
                       notes=f"Command: `{env}python benchmarks/generate.py{''.join(' ' + a for a in sys.argv[1:])}`. See the docstring of "
                             "benchmarks/generate.py for what each column measures.")


if __name__ == "__main__":
  main()
