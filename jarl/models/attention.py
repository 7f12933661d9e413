"""Attention implementations, the one place they live, chosen by `ModelConfig.attention`.

Every implementation takes queries [B, T, H, Dh], keys and values in the KV cache's layout
(keys [B, K, Dh, S], values [B, K, S, Dh]; K kv heads, H = K * G query heads) and a `Mask`, and
returns [B, T, H, Dh]. The mask is kept as its ingredients (which key slots hold real tokens, each
query's slot and, for rows that pack several sequences, each slot's segment): query t sees key s when
s is valid, s <= slot(t) and both are in the same segment, and always its own slot. So a [B, T, S]
mask is built only by the implementation that wants one.

  xla      scores for all T x S at once (einsums; f32 scores [B, H, T, S]). Today's default.
  chunked  blockwise online softmax (flash attention in pure JAX): loops over query blocks and,
           inside, over key blocks up to the block's last query slot (causal blocks and the cache's
           unfilled tail are never read), so memory is O(block_q x block_k) scores, not T x S. A
           custom VJP recomputes the scores block by block in the backward pass and keeps only the
           output and the log-sum-exp. Runs on any backend. Decode reads only the filled key blocks.
  cudnn    `jax.nn.dot_product_attention(implementation="cudnn")`: cuDNN's fused flash attention on
           NVIDIA GPUs (bfloat16 / float16 only), the slot mask passed as a dense [B, 1, T, T] mask
           (T x T per row in the compute dtype; the scores are never held).
  splash   the Pallas TPU splash-attention kernel: a causal mask and segment ids (the row's sequence,
           from 1, for real tokens; 0 for padding and idle slots), one kernel per kv head (MQA form), rows mapped over the
           mesh's batch axes. Off TPU it runs in Pallas' interpreter (correct, slow: for tests).
  auto     by backend: splash on TPU, cudnn on GPU in 16-bit, else chunked when the keys span more
           than one block, xla otherwise.

cudnn and splash serve forwards that start from slot 0 with no cache (the update, scoring and reward
forwards: `Mask.from_start`), where the memory is; forwards into a KV cache (prefill at a cursor,
decode) go to chunked, which reads only the cache's filled blocks.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax
import jax
import jax.numpy as jnp

from jarl import sharding

Array = jax.Array


@flax.struct.dataclass
class Mask:
  key_valid_BxS: Array  # bool: the key slot holds a real token
  q_slot_T: Array  # int32: each query's slot in the key sequence
  from_start: bool = flax.struct.field(pytree_node=False, default=False)  # queries are slots 0..T-1 of T keys
  # int32 [B, S]: the sequence each key slot belongs to, for rows that pack several (the update's
  # `learner.pack_slots`); None: one sequence per row
  segment_BxS: Array | None = None

  def segments(self) -> tuple[Array, Array]:
    """(queries' segments [B, T], keys' segments [B, S]); all 0 without segments."""
    seg_BxS = (jnp.zeros(self.key_valid_BxS.shape, jnp.int32) if self.segment_BxS is None
               else self.segment_BxS.astype(jnp.int32))
    return jnp.take(seg_BxS, self.q_slot_T, axis=1), seg_BxS

  def dense(self) -> Array:
    """Boolean [B, 1, T, S]: slot-causal over valid keys of the query's segment, plus the diagonal."""
    k_slot_S = jnp.arange(self.key_valid_BxS.shape[1])
    causal_TxS = k_slot_S[None, :] <= self.q_slot_T[:, None]
    diag_TxS = k_slot_S[None, :] == self.q_slot_T[:, None]
    seen_BxTxS = self.key_valid_BxS[:, None, :] & causal_TxS[None]
    if self.segment_BxS is not None:
      q_seg_BxT, k_seg_BxS = self.segments()
      seen_BxTxS &= q_seg_BxT[:, :, None] == k_seg_BxS[:, None, :]
    return (seen_BxTxS | diag_TxS[None])[:, None]


def _grouped(q_BxTxHxDh: Array, K: int) -> Array:
  B, T, H, Dh = q_BxTxHxDh.shape
  return q_BxTxHxDh.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)


def _ungrouped(x_BxKxGxTxDh: Array) -> Array:
  B, K, G, T, Dh = x_BxKxGxTxDh.shape
  return x_BxKxGxTxDh.transpose(0, 3, 1, 2, 4).reshape(B, T, K * G, Dh)


def xla(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask: Mask, scale: float, block: int = 0) -> Array:
  """GQA with einsums over the cache's layouts (no transpose of the cache) and a dense mask."""
  del block
  q_BxKxGxTxDh = _grouped(q_BxTxHxDh, k_BxKxDhxS.shape[1])
  s_BxKxGxTxS = jnp.einsum("bkgtd,bkds->bkgts", q_BxKxGxTxDh, k_BxKxDhxS.astype(q_BxTxHxDh.dtype),
                           preferred_element_type=jnp.float32) * scale
  s_BxKxGxTxS = jnp.where(mask.dense()[:, :, None], s_BxKxGxTxS, -jnp.inf)
  p_BxKxGxTxS = jax.nn.softmax(s_BxKxGxTxS, axis=-1).astype(q_BxTxHxDh.dtype)
  out_BxKxGxTxDh = jnp.einsum("bkgts,bksd->bkgtd", p_BxKxGxTxS, v_BxKxSxDh.astype(q_BxTxHxDh.dtype))
  return _ungrouped(out_BxKxGxTxDh)


def chunked(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask: Mask, scale: float, block: int = 512) -> Array:
  """Blockwise attention: blocks of `block` queries x `block` keys (fewer when T or S is shorter)."""
  q_BxKxGxTxDh = _grouped(q_BxTxHxDh, k_BxKxDhxS.shape[1])
  out_BxKxGxTxDh = _flash(q_BxKxGxTxDh, k_BxKxDhxS.astype(q_BxTxHxDh.dtype), v_BxKxSxDh.astype(q_BxTxHxDh.dtype),
                          mask.key_valid_BxS, mask.q_slot_T.astype(jnp.int32), mask.segments()[1], float(scale),
                          int(block))
  return _ungrouped(out_BxKxGxTxDh)


def dense_kernel(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask: Mask, scale: float, implementation: str) -> Array:
  """`jax.nn.dot_product_attention` over the cache's layouts with the dense slot mask."""
  dtype = q_BxTxHxDh.dtype
  return jax.nn.dot_product_attention(
      q_BxTxHxDh, k_BxKxDhxS.transpose(0, 3, 1, 2).astype(dtype), v_BxKxSxDh.transpose(0, 2, 1, 3).astype(dtype),
      mask=mask.dense(), scale=scale, implementation=implementation)


def cudnn(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask: Mask, scale: float, block: int = 512) -> Array:
  """cuDNN flash attention for forwards from slot 0; chunked for forwards into a cache."""
  if not mask.from_start:
    return chunked(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask, scale, block)
  return dense_kernel(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask, scale, "cudnn")


SPLASH_LANES = 128  # splash blocks are multiples of this


@functools.lru_cache(maxsize=None)
def _splash_kernel(heads: int, T: int, block: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib
  sizes = kernel_lib.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                                block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block,
                                block_kv_dq=block)
  causal = mask_lib.MultiHeadMask([mask_lib.CausalMask((T, T)) for _ in range(heads)])
  with jax.ensure_compile_time_eval():  # the kernel's block tables are constants, not values of a trace
    kernel = kernel_lib.make_splash_mqa(causal, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                        interpret=interpret)
  return lambda q_GxTxDh, k_TxDh, v_TxDh, seg_T: kernel(q_GxTxDh, k_TxDh, v_TxDh,
                                                       segment_ids=kernel_lib.SegmentIds(seg_T, seg_T))


def splash(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask: Mask, scale: float, block: int = 512) -> Array:
  """Splash attention for forwards from slot 0 (T padded to whole blocks); chunked for forwards into a cache.

  A real token sees the real tokens at or before it (causal mask and equal segment ids); a padding or
  idle slot sees the padding before it instead of only itself, which changes only outputs nothing reads."""
  if not mask.from_start:
    return chunked(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask, scale, block)
  B, T, H, Dh = q_BxTxHxDh.shape
  K = k_BxKxDhxS.shape[1]
  size = max(SPLASH_LANES, min(block, -(-T // SPLASH_LANES) * SPLASH_LANES) // SPLASH_LANES * SPLASH_LANES)
  Tp = -(-T // size) * size
  pad = lambda x, axis: jnp.pad(x, [(0, Tp - T) if a == axis else (0, 0) for a in range(x.ndim)])
  dtype = q_BxTxHxDh.dtype
  q_BxKxGxTxDh = pad(_grouped(q_BxTxHxDh * jnp.asarray(scale, dtype), K), 3)
  k_BxKxTxDh = pad(k_BxKxDhxS.transpose(0, 1, 3, 2).astype(dtype), 2)
  v_BxKxTxDh = pad(v_BxKxSxDh.astype(dtype), 2)
  real_BxT = mask.key_valid_BxS.astype(jnp.int32)
  seg_BxT = pad(real_BxT if mask.segment_BxS is None else real_BxT * (mask.segment_BxS.astype(jnp.int32) + 1), 1)
  kernel = _splash_kernel(H // K, Tp, size, jax.default_backend() != "tpu")
  per_kv_head = jax.vmap(kernel, in_axes=(0, 0, 0, None))
  out_BxKxGxTxDh = sharding.over_rows(jax.vmap(per_kv_head), q_BxKxGxTxDh, k_BxKxTxDh, v_BxKxTxDh, seg_BxT)
  return _ungrouped(out_BxKxGxTxDh[:, :, :, :T])


def auto(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask: Mask, scale: float, block: int = 512) -> Array:
  """The backend's best: splash on TPU, cudnn on GPU in 16-bit, else chunked past one block, else xla."""
  return IMPLEMENTATIONS[choose(jax.default_backend(), q_BxTxHxDh.dtype, k_BxKxDhxS.shape[3], block)](
      q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask, scale, block)


def choose(backend: str, dtype, S: int, block: int) -> str:
  if backend == "tpu":
    return "splash"
  if backend == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
    return "cudnn"
  return "chunked" if S > block else "xla"


IMPLEMENTATIONS: dict[str, Callable] = {"xla": xla, "chunked": chunked, "cudnn": cudnn, "splash": splash,
                                        "auto": auto}


def attend(name: str, q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask: Mask, scale: float, block: int) -> Array:
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {name!r}; available: {sorted(IMPLEMENTATIONS)}")
  return IMPLEMENTATIONS[name](q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask, scale, block)


# --- blockwise attention with a recomputing backward pass -------------------------------------------------------
# Blocks never pad: the last block starts at min(i * size, length - size), and the rows or slots it shares
# with the block before are masked out (keys) or not written (queries), so every pair is counted once.


def _start(i, size: int, length: int):
  return jnp.minimum(i * size, length - size)


def _key_blocks(q_slot_bq, size: int, S: int):
  """How many key blocks a query block needs: up to its last query slot (later keys are never seen)."""
  return jnp.minimum((jnp.max(q_slot_bq) + size) // size, -(-S // size))


def _block_scores(q_BxKxGxTxDh, k_BxKxDhxS, key_valid_BxS, q_slot_T, seg_BxS, j, size: int, scale: float):
  """Scores [B, K, G, T, size] of key block j (masked to -inf) and where that block's keys start."""
  S = k_BxKxDhxS.shape[3]
  start = _start(j, size, S)
  k_BxKxDhxC = jax.lax.dynamic_slice_in_dim(k_BxKxDhxS, start, size, axis=3)
  valid_BxC = jax.lax.dynamic_slice_in_dim(key_valid_BxS, start, size, axis=1)
  same_BxTxC = (jnp.take(seg_BxS, q_slot_T, axis=1)[:, :, None]
                == jax.lax.dynamic_slice_in_dim(seg_BxS, start, size, axis=1)[:, None, :])
  slot_C = start + jnp.arange(size)
  seen_BxTxC = (valid_BxC[:, None, :] & same_BxTxC & (slot_C[None, None, :] <= q_slot_T[None, :, None])) | (
      slot_C[None, None, :] == q_slot_T[None, :, None])
  seen_BxTxC &= (slot_C >= j * size)[None, None, :]  # slots the block before already covered
  s = jnp.einsum("bkgtd,bkdc->bkgtc", q_BxKxGxTxDh, k_BxKxDhxC, preferred_element_type=jnp.float32) * scale
  return jnp.where(seen_BxTxC[:, None, None], s, -jnp.inf), start, k_BxKxDhxC


def _forward(q, k, v, key_valid, q_slot, seg, scale, block):
  """(out [B, K, G, T, Dh] in q's dtype, log-sum-exp [B, K, G, T] f32)."""
  B, K, G, T, Dh = q.shape
  S = k.shape[3]
  bq, bk = min(block, T), min(block, S)

  def query_block(i, outs):
    out, lse = outs
    qs = _start(i, bq, T)
    q_b = jax.lax.dynamic_slice_in_dim(q, qs, bq, axis=3)
    slot_b = jax.lax.dynamic_slice_in_dim(q_slot, qs, bq)

    def key_block(j, carry):
      m, l, acc = carry
      s, ks, _ = _block_scores(q_b, k, key_valid, slot_b, seg, j, bk, scale)
      v_c = jax.lax.dynamic_slice_in_dim(v, ks, bk, axis=2)
      m_new = jnp.maximum(m, s.max(-1))
      m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
      p = jnp.exp(s - m_safe[..., None])
      correction = jnp.exp(m - m_safe)
      acc = acc * correction[..., None] + jnp.einsum("bkgtc,bkcd->bkgtd", p.astype(v.dtype), v_c,
                                                     preferred_element_type=jnp.float32)
      return m_new, l * correction + p.sum(-1), acc

    init = (jnp.full((B, K, G, bq), -jnp.inf), jnp.zeros((B, K, G, bq)), jnp.zeros((B, K, G, bq, Dh)))
    m, l, acc = jax.lax.fori_loop(0, _key_blocks(slot_b, bk, S), key_block, init)
    out = jax.lax.dynamic_update_slice_in_dim(out, (acc / l[..., None]).astype(q.dtype), qs, axis=3)
    return out, jax.lax.dynamic_update_slice_in_dim(lse, m + jnp.log(l), qs, axis=3)

  outs = (jnp.zeros(q.shape, q.dtype), jnp.zeros((B, K, G, T), jnp.float32))
  return jax.lax.fori_loop(0, -(-T // bq), query_block, outs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _flash(q, k, v, key_valid, q_slot, seg, scale, block):
  return _forward(q, k, v, key_valid, q_slot, seg, scale, block)[0]


def _flash_fwd(q, k, v, key_valid, q_slot, seg, scale, block):
  out, lse = _forward(q, k, v, key_valid, q_slot, seg, scale, block)
  return out, (q, k, v, key_valid, q_slot, seg, out, lse)


def _flash_bwd(scale, block, residuals, dout):
  q, k, v, key_valid, q_slot, seg, out, lse = residuals
  B, K, G, T, Dh = q.shape
  S = k.shape[3]
  bq, bk = min(block, T), min(block, S)
  delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B, K, G, T]

  def query_block(i, grads):
    dq, dk, dv = grads
    qs = _start(i, bq, T)
    rows = lambda x: jax.lax.dynamic_slice_in_dim(x, qs, bq, axis=3)
    slot_b = jax.lax.dynamic_slice_in_dim(q_slot, qs, bq)
    new_T = qs + jnp.arange(bq) >= i * bq  # rows the block before did not cover: the others add nothing
    q_b, lse_b, delta_b = rows(q), rows(lse), jnp.where(new_T, rows(delta), 0.0)
    do_b = jnp.where(new_T[:, None], rows(dout), 0).astype(jnp.float32)

    def key_block(j, carry):
      dq_b, dk, dv = carry
      s, ks, k_c = _block_scores(q_b, k, key_valid, slot_b, seg, j, bk, scale)
      v_c = jax.lax.dynamic_slice_in_dim(v, ks, bk, axis=2)
      p = jnp.exp(s - lse_b[..., None])  # masked scores are -inf: p = 0 there
      dv_c = jnp.einsum("bkgtc,bkgtd->bkcd", p, do_b)
      dp = jnp.einsum("bkgtd,bkcd->bkgtc", do_b, v_c.astype(jnp.float32))
      ds = p * (dp - delta_b[..., None]) * scale
      dq_b = dq_b + jnp.einsum("bkgtc,bkdc->bkgtd", ds, k_c.astype(jnp.float32))
      dk_c = jnp.einsum("bkgtc,bkgtd->bkdc", ds, q_b.astype(jnp.float32))
      add = lambda x, dx, axis: jax.lax.dynamic_update_slice_in_dim(
          x, jax.lax.dynamic_slice_in_dim(x, ks, bk, axis=axis) + dx, ks, axis=axis)
      return dq_b, add(dk, dk_c, 3), add(dv, dv_c, 2)

    dq_b, dk, dv = jax.lax.fori_loop(0, _key_blocks(slot_b, bk, S), key_block,
                                     (jnp.zeros(q_b.shape, jnp.float32), dk, dv))
    dq_b = jnp.where(new_T[:, None], dq_b, rows(dq))
    return jax.lax.dynamic_update_slice_in_dim(dq, dq_b, qs, axis=3), dk, dv

  grads = (jnp.zeros(q.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
  dq, dk, dv = jax.lax.fori_loop(0, -(-T // bq), query_block, grads)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
