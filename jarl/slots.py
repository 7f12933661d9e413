"""The rollout's carry and its slot edits: what planning (best-of-K) and the rollout both build on.

A `Carry` holds the KV cache, the [B, T] slot buffers and each row's cursor state. All rows share one
slot cursor (the cache's index); `write` puts [B, K] columns at it. `drop`, `hide_slots` and
`keep_slots` undo, set aside or bring back what was written since an earlier carry, row by row.
`source_slots` says which slot's logits predicted each slot's token (the replay and the update read them).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jarl.models import KVCache

Array = jax.Array


@flax.struct.dataclass
class Carry:
  cache: KVCache
  buf: dict  # name -> [B, T]
  logits_BxV: Array  # next-token logits after each row's last valid slot
  next_pos_B: Array  # RoPE position of each row's next token
  last_policy_slot_B: Array  # where this turn's reward goes
  hidden_BxD: Array  # final hidden state at each row's last valid slot (value scoring reads it)
  decode_steps: Array  # int32: sampling steps run so far (all rows step together; early exit skips the rest)
  decode_budget: Array  # int32: sampling steps the budgets of segments some row played allowed so far
  decode_rows: Array  # int32: rows those steps computed, summed (B each, fewer with live-row compaction)


CURSOR = ("logits_BxV", "next_pos_B", "last_policy_slot_B", "hidden_BxD")  # a row's state between slots


def cursor(c: Carry) -> dict:
  return {name: getattr(c, name) for name in CURSOR}


def write(c: Carry, cols: dict) -> dict:
  """Write [B, K] columns into the slot buffers at the cache cursor (before it advances)."""
  K = next(iter(cols.values())).shape[1]
  return {name: jax.lax.dynamic_update_slice(buf, cols.get(name, jnp.zeros((buf.shape[0], K), buf.dtype))
                                             .astype(buf.dtype), (0, c.cache.index))
          for name, buf in c.buf.items()}


def where(cond_B: Array, a, b):
  """Per row: pytree a where cond_B, else b."""
  return jax.tree.map(lambda x, y: jnp.where(cond_B.reshape(cond_B.shape + (1,) * (x.ndim - 1)), x, y), a, b)


def new_slots(before: Carry, after: Carry) -> Array:
  """[T]: the slots written since `before` (T: the slot buffers' length; the cache may be shorter)."""
  slot_T = jnp.arange(after.buf["valid"].shape[1])
  return (slot_T >= before.cache.index) & (slot_T < after.cache.index)


def in_cache(x_BxT: Array, cache: KVCache) -> Array:
  """A [B, T] slot mask cut to the cache's slots (the cursor never passes them)."""
  return x_BxT[:, :cache.length]


def drop(before: Carry, after: Carry, drop_B: Array) -> Carry:
  """Undo, for the rows in drop_B, what was written since `before`: their slots become idle
  (invalid in the KV cache and the buffers) and their cursor state is restored."""
  new_BxT = drop_B[:, None] & new_slots(before, after)[None]
  buf = jax.tree.map(lambda old, x: jnp.where(new_BxT, old, x), before.buf, after.buf)  # old: never written
  cache = after.cache.replace(valid_BxS=after.cache.valid_BxS & ~in_cache(new_BxT, after.cache))
  return after.replace(cache=cache, buf=buf, **where(drop_B, cursor(before), cursor(after)))


def hide_slots(before: Carry, after: Carry) -> Carry:
  """Set aside, for every row, what was written since `before` (a best-of-K candidate): its
  slots become invisible to later tokens (KV cache validity off) and the cursor state is
  restored, but the buffers keep their contents (`keep_slots` brings one candidate back)."""
  cache = after.cache.replace(valid_BxS=after.cache.valid_BxS & ~in_cache(new_slots(before, after)[None], after.cache))
  return after.replace(cache=cache, **cursor(before))


def keep_slots(before: Carry, after: Carry, keep_BxT: Array, kept_cursor: dict) -> Carry:
  """Of the slots written (and hidden) since `before`, bring back keep_BxT: visible again in
  the KV cache where their buffers hold valid tokens; the others become idle (invalid, no
  loss). Each row's cursor state becomes `kept_cursor`, as after its kept slots."""
  idle_BxT = new_slots(before, after)[None] & ~keep_BxT
  buf = jax.tree.map(lambda old, x: jnp.where(idle_BxT, old, x), before.buf, after.buf)  # old: never written
  cache = after.cache.replace(valid_BxS=after.cache.valid_BxS | in_cache(keep_BxT & buf["valid"], after.cache))
  return after.replace(cache=cache, buf=buf, **kept_cursor)


def source_slots(valid_BxT: Array) -> Array:
  """For every slot, the row's last valid slot before it: whose logits predicted its token."""
  T = valid_BxT.shape[1]
  slot_BxT = jnp.where(valid_BxT, jnp.arange(T)[None, :], 0)
  return jnp.pad(jax.lax.cummax(slot_BxT, axis=1)[:, :-1], ((0, 0), (1, 0)))


def gather_logprobs(logits_BxTxV: Array, tokens_BxT: Array, valid_BxT: Array, mask_BxT: Array) -> Array:
  """log p(token at slot s) from the logits of its source slot, where mask is on (0 elsewhere)."""
  source_BxT = source_slots(valid_BxT)
  rows_Bx1 = jnp.arange(tokens_BxT.shape[0])[:, None]
  logit_BxT = logits_BxTxV[rows_Bx1, source_BxT, tokens_BxT]
  lse_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)[rows_Bx1, source_BxT]
  return jnp.where(mask_BxT, logit_BxT - lse_BxT, 0.0)
