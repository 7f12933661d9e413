"""Packing for the update's forwards: episodes' valid slots laid end to end in fewer, denser rows.

    packed, overflow_B = pack_slots(batch, length=192, rows=23)   # batch: tokens / positions / valid [B, T]
    h_RxLxD = lm.apply(params, packed["tokens"], packed["positions"], None, packed["valid"],
                       method="hidden", segment_BxT=packed["segment"])
    h_BxTxD = h_RxLxD[packed["source_row"], packed["source_col"]]   # each slot's predicting hidden state

    index_BxL, overflow_B = pack_trained(loss_mask_BxP, length=24)   # the output head's slots
    logits_BxLxV = head(h_BxPxD.reshape(B * P, D)[jnp.minimum(index_BxL, B * P - 1)])   # padding: B * P

`AlgoConfig.pack_len` / `pack_rows` choose the first for the update, `AlgoConfig.head_len` the second
(`forward.policy_outputs`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jarl.slots import source_slots

Array = jax.Array


def pack_slots(batch: dict, length: int, rows: int) -> tuple[dict, Array]:
  """(the batch's valid slots laid end to end into `rows` rows of `length` slots, which of its rows did not
  fit [B]).

  Rows go in order, each row's valid slots in order; a row that does not fit in what is left of a
  packed row starts the next one (next-fit). Returns tokens, positions, valid and segment [rows, length]
  (segment: the source row + 1, 0 for padding), for a forward whose attention stays within a segment:
  every token sees the same keys at the same RoPE positions as in the [B, T] forward, so its hidden
  state is the same. And source_row / source_col [B, T]: where the hidden state that predicts each
  slot's token (its source slot's, `source_slots`) lands. The slots of a row that does not fit are
  dropped (or cut at `length`).
  """
  valid_BxT = batch["valid"]
  B, T = valid_BxT.shape
  count_B = valid_BxT.sum(1).astype(jnp.int32)

  def next_fit(carry, n):
    row, used = carry
    new = (used > 0) & (used + n > length)
    row, used = row + new, jnp.where(new, 0, used)
    return (row, used + n), (row, used)
  _, (row_B, offset_B) = jax.lax.scan(next_fit, (jnp.int32(0), jnp.int32(0)), count_B)
  col_BxT = offset_B[:, None] + jnp.cumsum(valid_BxT, 1, dtype=jnp.int32) - 1
  dest_row_BxT = jnp.where(valid_BxT, row_B[:, None], rows)  # idle slots: dropped

  def put(x_BxT):
    return jnp.zeros((rows, length), x_BxT.dtype).at[dest_row_BxT, col_BxT].set(x_BxT, mode="drop")
  source_col_BxT = jnp.take_along_axis(col_BxT, source_slots(valid_BxT), axis=1)
  packed = dict(tokens=put(batch["tokens"]), positions=put(batch["positions"]), valid=put(valid_BxT),
                segment=put(jnp.broadcast_to(jnp.arange(1, B + 1, dtype=jnp.int32)[:, None], (B, T))),
                source_row=jnp.broadcast_to(jnp.clip(row_B, 0, rows - 1)[:, None], (B, T)),
                source_col=jnp.clip(source_col_BxT, 0, length - 1))
  return packed, (count_B > length) | (row_B >= rows)


def pack_trained(mask_BxP: Array, length: int) -> tuple[Array, Array]:
  """(the flat indices b * P + p of the trained slots (`mask_BxP`) laid end to end into B rows of `length`
  [B, length], which rows did not fit [B]).

  Slots go in row-major order; the unused tail is B * P (one past the last slot: clip it to read, drop it
  to write back). A row that has a trained slot beyond the B x length that fit did not fit.
  """
  B, P = mask_BxP.shape
  (index_N,) = jnp.nonzero(mask_BxP.reshape(-1), size=B * length, fill_value=B * P)
  count_B = mask_BxP.sum(1, dtype=jnp.int32)
  return index_N.reshape(B, length), (jnp.cumsum(count_B) > B * length) & (count_B > 0)
