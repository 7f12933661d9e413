"""Decoder-only transformer for the Llama / Qwen2 / Qwen3 families, as Flax NNX modules.

Every parameter carries logical axis names in its `axes` metadata (`embed`, `mlp`,
`heads`, `kv_heads`, `head_dim`, `vocab`, `norm`); `jarl.sharding` maps them to mesh
axes. Code outside `jarl.models` never calls these modules directly: it uses the
pure `apply(params, ...)` of an `LM` handle (`jarl/models/lm.py`).

Token layout. A row is a sequence of slots; `valid_BxT` marks which slots hold real
tokens (False for padding or idle steps) and `positions_BxT` gives each token's RoPE
position. A query at slot t attends to valid keys at slots <= t (and always to itself,
so padded rows stay finite). The KV cache is written at one shared slot cursor
(`KVCache.index`) for the whole batch: prompts of different lengths are left-padded,
and rows that idle during decoding write an invalid slot. The same (tokens, positions,
valid) buffers replayed through one full forward give exactly the sampler's logits.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jarl import sharding
from jarl.models import attention
from jarl.models.config import ModelConfig

Array = jax.Array


def _fan_in_init(n_in: int, rank: int):
  return nnx.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=tuple(range(n_in)),
      out_axis=tuple(range(n_in, rank)))


class Dense(nnx.Module):
  """y = x ⋅ kernel (+ bias) (+ a LoRA update when `jarl.models.lora` attached one),
  contracting the last `len(in_shape)` dims of x."""

  def __init__(self, in_shape: tuple, out_shape: tuple, axes: tuple, *, use_bias: bool,
               cfg: ModelConfig, rngs: nnx.Rngs):
    shape = tuple(in_shape) + tuple(out_shape)
    init = _fan_in_init(len(in_shape), len(shape))
    self.kernel = nnx.Param(init(rngs.params(), shape, cfg.weight_dtype), axes=axes)
    self.bias = (nnx.Param(jnp.zeros(out_shape, cfg.weight_dtype), axes=axes[len(in_shape):])
                 if use_bias else None)
    self.n_in = len(in_shape)
    self.dtype = cfg.compute_dtype
    self.lora = None

  def __call__(self, x: Array) -> Array:
    x = x.astype(self.dtype)
    kernel = self.kernel[...].astype(self.dtype)
    lead, in_shape, out_shape = x.shape[:-self.n_in], kernel.shape[:self.n_in], kernel.shape[self.n_in:]
    # One 2-D matmul: with [B, T, ...] operands XLA:CPU transposes activations for the weight
    # gradient in a slow 3-D copy (half of a training step on CPU); in 2-D its dot takes them as they are.
    y = (x.reshape(-1, math.prod(in_shape)) @ kernel.reshape(math.prod(in_shape), -1)).reshape(*lead, *out_shape)
    if self.lora is not None:
      y = y + self.lora(x)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class RMSNorm(nnx.Module):
  """RMSNorm computed in float32, scaled after casting back (as transformers does)."""

  def __init__(self, dim: int, cfg: ModelConfig):
    self.scale = nnx.Param(jnp.ones((dim,), cfg.weight_dtype), axes=("norm",))
    self.eps = cfg.rms_norm_eps

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)


def rope_tables(cfg: ModelConfig, positions_BxT: Array) -> tuple[Array, Array]:
  """(sin, cos) of shape [B, T, head_dim], float32, half-split layout (rotate_half)."""
  inv_freq = jnp.asarray(cfg.rope_inv_freq())
  angles_BxTxF = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
  angles_BxTxDh = jnp.concatenate([angles_BxTxF, angles_BxTxF], axis=-1)
  return jnp.sin(angles_BxTxDh), jnp.cos(angles_BxTxDh)


def apply_rope(x_BxTxNxDh: Array, sin_BxTxDh: Array, cos_BxTxDh: Array) -> Array:
  half = x_BxTxNxDh.shape[-1] // 2
  x1, x2 = x_BxTxNxDh[..., :half], x_BxTxNxDh[..., half:]
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  sin, cos = (t[:, :, None, :].astype(x_BxTxNxDh.dtype) for t in (sin_BxTxDh, cos_BxTxDh))
  return x_BxTxNxDh * cos + rotated * sin


@flax.struct.dataclass
class KVCache:
  """Keys [B, K, Dh, S] and values [B, K, S, Dh] per layer, which slots hold real tokens, and the cursor.

  `k` and `v` are tuples of per-layer arrays, or with `scan_layers` one array each with the layers
  stacked in front ([L, B, K, Dh, S]), read and written a layer at a time inside the scan
  (`LayerCache` is one layer's view in either layout).
  Keys are stored transposed so that both attention einsums read the cache in the layout
  the CPU matmul wants (on XLA:CPU a [B, K, S, Dh] key cache is repacked for every score
  product, which made decode attention 2x slower; not measured on GPU/TPU).
  """
  k: tuple | Array
  v: tuple | Array
  valid_BxS: Array
  index: Array  # int32 scalar: slots [0, index) are written

  K_SLOT_AXIS, V_SLOT_AXIS = -1, -2  # the same in both layouts

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, length: int) -> "KVCache":
    K, Dh = cfg.n_kv_heads, cfg.head_dim
    def zeros(shape):  # every layer's k and v get buffers of their own (a shared one could not be donated)
      if cfg.scan_layers:
        return jnp.zeros((cfg.n_layers, *shape), cfg.compute_dtype)
      return tuple(jnp.zeros(shape, cfg.compute_dtype) for _ in range(cfg.n_layers))
    return cls(k=zeros((batch, K, Dh, length)), v=zeros((batch, K, length, Dh)),
               valid_BxS=jnp.zeros((batch, length), bool), index=jnp.zeros((), jnp.int32))

  @property
  def length(self) -> int:
    return self.valid_BxS.shape[1]

  def grow(self, length: int) -> "KVCache":
    """The cache with invalid slots appended up to `length`."""
    extra = length - self.length
    if extra == 0:
      return self
    def pad(axis):
      return lambda x: jnp.pad(x, [(0, extra if d == x.ndim + axis else 0) for d in range(x.ndim)])
    return KVCache(jax.tree.map(pad(self.K_SLOT_AXIS), self.k), jax.tree.map(pad(self.V_SLOT_AXIS), self.v),
                   pad(-1)(self.valid_BxS), self.index)

  def _row_axis(self) -> int:  # the batch axis of k and v: behind the stacked layers with scan_layers
    return 0 if isinstance(self.k, tuple) else 1

  def take_rows(self, rows_b: Array) -> "KVCache":
    """The cache of rows `rows_b` [b] (same cursor)."""
    take = lambda x: jnp.take(x, rows_b, axis=self._row_axis())  # noqa: E731
    return KVCache(jax.tree.map(take, self.k), jax.tree.map(take, self.v), self.valid_BxS[rows_b], self.index)

  def put_rows(self, rows_b: Array, part: "KVCache") -> "KVCache":
    """The cache with rows `rows_b` (distinct) replaced by `part`'s, and `part`'s cursor."""
    at = (slice(None),) * self._row_axis() + (rows_b,)
    put = lambda x, y: x.at[at].set(y)  # noqa: E731
    return KVCache(jax.tree.map(put, self.k, part.k), jax.tree.map(put, self.v, part.v),
                   self.valid_BxS.at[rows_b].set(part.valid_BxS), part.index)


@flax.struct.dataclass
class LayerCache:
  """One layer's keys and values: its own arrays (k [B, K, Dh, S], v [B, K, S, Dh]), or with
  `scan_layers` the stacked cache and the layer's index (written in place inside the scan)."""
  k: Array
  v: Array
  layer: Array | None = None

  def write(self, k_BxKxDhxT: Array, v_BxKxTxDh: Array, index: Array) -> "LayerCache":
    """The cache with T new slots written at the cursor."""
    lead = () if self.layer is None else (self.layer,)
    return self.replace(
        k=jax.lax.dynamic_update_slice(self.k, k_BxKxDhxT.astype(self.k.dtype)[(None,) * len(lead)],
                                       (*lead, 0, 0, 0, index)),
        v=jax.lax.dynamic_update_slice(self.v, v_BxKxTxDh.astype(self.v.dtype)[(None,) * len(lead)],
                                       (*lead, 0, 0, index, 0)))

  def read(self) -> tuple[Array, Array]:
    """This layer's (keys, values)."""
    return (self.k, self.v) if self.layer is None else (self.k[self.layer], self.v[self.layer])


class Attention(nnx.Module):
  """Grouped-query attention with RoPE, optional q/k/v/o biases and q/k RMSNorm."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    D, H, K, Dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    self.q = Dense((D,), (H, Dh), ("embed", "heads", "head_dim"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
    self.k = Dense((D,), (K, Dh), ("embed", "kv_heads", "head_dim"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
    self.v = Dense((D,), (K, Dh), ("embed", "kv_heads", "head_dim"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
    self.o = Dense((H, Dh), (D,), ("heads", "head_dim", "embed"), use_bias=cfg.o_bias, cfg=cfg, rngs=rngs)
    self.q_norm = RMSNorm(Dh, cfg) if cfg.qk_norm else None
    self.k_norm = RMSNorm(Dh, cfg) if cfg.qk_norm else None
    self.scale = Dh ** -0.5
    self.implementation, self.block = cfg.attention, cfg.attention_block

  def __call__(self, x_BxTxD, sin, cos, mask: attention.Mask, kv=None, index=None):
    q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh = self.q(x_BxTxD), self.k(x_BxTxD), self.v(x_BxTxD)
    if self.q_norm is not None:
      q_BxTxHxDh, k_BxTxKxDh = self.q_norm(q_BxTxHxDh), self.k_norm(k_BxTxKxDh)
    q_BxTxHxDh = apply_rope(q_BxTxHxDh, sin, cos)
    k_BxKxDhxT = apply_rope(k_BxTxKxDh, sin, cos).transpose(0, 2, 3, 1)  # the cache's layouts
    v_BxKxTxDh = v_BxTxKxDh.transpose(0, 2, 1, 3)
    if kv is None:  # no cache: the new keys and values are all there is
      keys_values = (k_BxKxDhxT, v_BxKxTxDh)
    else:  # write the new slots into the cache, attend over all of it
      kv = kv.write(k_BxKxDhxT, v_BxKxTxDh, index)
      keys_values = kv.read()
    out_BxTxHxDh = attention.attend(self.implementation, q_BxTxHxDh, *keys_values, mask, self.scale, self.block)
    return self.o(out_BxTxHxDh), kv


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    D, F = cfg.d_model, cfg.mlp_dim
    self.gate = Dense((D,), (F,), ("embed", "mlp"), use_bias=False, cfg=cfg, rngs=rngs)
    self.up = Dense((D,), (F,), ("embed", "mlp"), use_bias=False, cfg=cfg, rngs=rngs)
    self.down = Dense((F,), (D,), ("mlp", "embed"), use_bias=False, cfg=cfg, rngs=rngs)

  def __call__(self, x_BxTxD):
    return self.down(jax.nn.silu(self.gate(x_BxTxD)) * self.up(x_BxTxD))


class Block(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.d_model, cfg)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x_BxTxD, sin, cos, mask: attention.Mask, kv: LayerCache | None = None, index=None):
    """(the block's output, its LayerCache with this call's slots written, or None)."""
    attn_out, kv = self.attn(self.attn_norm(x_BxTxD), sin, cos, mask, kv, index)
    x_BxTxD = x_BxTxD + attn_out
    return x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD)), kv


REMAT_POLICIES = {"block": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _block_fn(graphdef, remat: str) -> Callable:
  """A pure (block params, x, sin, cos, mask, kv, index) -> Block output, under `jax.checkpoint` unless
  remat is "none" (the backward pass then recomputes what the policy does not save)."""
  def run(state, *args):
    return nnx.merge(graphdef, state)(*args)
  return run if remat == "none" else jax.checkpoint(run, policy=REMAT_POLICIES[remat], prevent_cse=False)


def stacked_blocks(cfg: ModelConfig, rngs: nnx.Rngs) -> Block:
  """One Block whose params hold all layers stacked in front (logical axis "layers"), initialised with
  the same values as the unrolled model's layers (same rngs, same order)."""
  layers = [nnx.split(Block(cfg, rngs)) for _ in range(cfg.n_layers)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(state for _, state in layers))
  for variable in jax.tree.leaves(stacked, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    variable.set_metadata("axes", ("layers", *variable.get_metadata()["axes"]))
  return nnx.merge(layers[0][0], stacked)


def _rows(x_BxTxD: Array) -> Array:
  """The residual stream laid out by rows (over data and fsdp), each row's features whole: without it
  the stream inherits the embedding's fsdp sharding of d_model, and every norm and matmul gathers
  activations to the global batch."""
  return sharding.constrain(x_BxTxD, ("batch", None, None))


def attention_mask(valid_BxT: Array, cache: KVCache | None, segment_BxT: Array | None = None) -> attention.Mask:
  """Which key slots hold real tokens (the cache's, with these T written at its cursor) and each query's slot;
  `segment_BxT` (forwards from slot 0 only): rows that pack several sequences, attention kept within each."""
  T = valid_BxT.shape[1]
  if cache is None:
    return attention.Mask(valid_BxT, jnp.arange(T), from_start=True, segment_BxS=segment_BxT)
  if segment_BxT is not None:
    raise ValueError("segment_BxT (packed rows) is for forwards from slot 0, not into a KV cache")
  key_valid_BxS = jax.lax.dynamic_update_slice(cache.valid_BxS, valid_BxT, (0, cache.index))
  return attention.Mask(key_valid_BxS, cache.index + jnp.arange(T))


class Transformer(nnx.Module):
  """The decoder LM. `hidden` gives final-norm states, `__call__` float32 logits."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, lm_head: bool = True):
    self.config = cfg
    embed_init = nnx.initializers.normal(stddev=cfg.d_model ** -0.5)
    self.embed = nnx.Param(embed_init(rngs.params(), (cfg.vocab_size, cfg.d_model), cfg.weight_dtype),
                           axes=("vocab", "embed"))
    self.layers = (stacked_blocks(cfg, rngs) if cfg.scan_layers
                   else nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)]))
    self.final_norm = RMSNorm(cfg.d_model, cfg)
    self.lm_head = (Dense((cfg.d_model,), (cfg.vocab_size,), ("embed", "vocab"), use_bias=False,
                          cfg=cfg, rngs=rngs)
                    if lm_head and not cfg.tie_embeddings else None)

  def hidden(self, tokens_BxT: Array, positions_BxT: Array | None = None,
             cache: KVCache | None = None, valid_BxT: Array | None = None, segment_BxT: Array | None = None):
    cfg = self.config
    if valid_BxT is None:
      valid_BxT = jnp.ones(tokens_BxT.shape, bool)
    if positions_BxT is None:
      if cache is not None:
        raise ValueError("positions_BxT is required when decoding with a cache")
      positions_BxT = jnp.maximum(jnp.cumsum(valid_BxT, axis=1) - 1, 0)
    mask = attention_mask(valid_BxT, cache, segment_BxT)
    sin, cos = rope_tables(cfg, positions_BxT)
    x_BxTxD = _rows(jnp.take(self.embed[...], tokens_BxT, axis=0).astype(cfg.compute_dtype))
    layers = self._scanned if cfg.scan_layers else self._unrolled
    x_BxTxD, kv = layers(x_BxTxD, sin, cos, mask, cache)
    if cache is not None:
      cache = KVCache(k=kv[0], v=kv[1], valid_BxS=mask.key_valid_BxS, index=cache.index + tokens_BxT.shape[1])
    return self.final_norm(x_BxTxD), cache

  def _unrolled(self, x_BxTxD, sin, cos, mask, cache):
    """The layers one after another; (output, the cache's new (k, v) tuples or None)."""
    new_k, new_v = [], []
    for i, layer in enumerate(self.layers):
      graphdef, state = nnx.split(layer)
      kv = None if cache is None else LayerCache(cache.k[i], cache.v[i])
      x_BxTxD, kv = _block_fn(graphdef, self.config.remat)(state, _rows(x_BxTxD), sin, cos, mask, kv,
                                                            None if cache is None else cache.index)
      if cache is not None:
        new_k.append(kv.k)
        new_v.append(kv.v)
    return x_BxTxD, None if cache is None else (tuple(new_k), tuple(new_v))

  def _scanned(self, x_BxTxD, sin, cos, mask, cache):
    """The layers as one lax.scan over the stacked params. The stacked cache rides in the carry and each
    layer writes its new slots into it in place. (As scan inputs and outputs the whole cache was copied
    every step: a SmolLM2 decode step at batch 16 took 1.2-1.3x longer on XLA:CPU; in the carry it
    takes as long as the unrolled layers.)"""
    graphdef, stacked = nnx.split(self.layers)
    run = _block_fn(graphdef, self.config.remat)
    if cache is None:
      x_BxTxD, _ = jax.lax.scan(lambda x, state: (run(state, _rows(x), sin, cos, mask)[0], None), x_BxTxD, stacked)
      return x_BxTxD, None

    def layer(carry, xs):
      x_BxTxD, kv = carry
      state, i = xs
      x_BxTxD, kv = run(state, _rows(x_BxTxD), sin, cos, mask, kv.replace(layer=i), cache.index)
      return (x_BxTxD, kv), None
    (x_BxTxD, kv), _ = jax.lax.scan(layer, (x_BxTxD, LayerCache(cache.k, cache.v, jnp.zeros((), jnp.int32))),
                                    (stacked, jnp.arange(self.config.n_layers)))
    return x_BxTxD, (kv.k, kv.v)

  def logits(self, h_BxTxD: Array) -> Array:
    """float32 logits, rows over (data, fsdp) and the vocabulary over tensor."""
    h_BxTxD = _rows(h_BxTxD)
    if self.lm_head is None:
      embed_VxD = self.embed[...].astype(h_BxTxD.dtype)
      logits_BxTxV = jnp.einsum("btd,vd->btv", h_BxTxD, embed_VxD, preferred_element_type=jnp.float32)
    else:
      logits_BxTxV = self.lm_head(h_BxTxD).astype(jnp.float32)
    return sharding.constrain(logits_BxTxV, ("batch", None, "vocab"))

  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, valid_BxT=None):
    h_BxTxD, cache = self.hidden(tokens_BxT, positions_BxT, cache, valid_BxT)
    return self.logits(h_BxTxD), cache
