"""The update's forward: each policy slot's log-prob, entropy and value from one forward over a batch.

    logp_BxP, entropy_BxP, values_BxP = policy_outputs(lm, params, batch, slots)    # batch: [B, T] buffers
    logp_BxT = replay_logprobs(lm, params, traj)      # a rollout's tokens replayed: its sampler's log-probs

The RL update (`jarl.learner`), the SFT step (`jarl.sft`) and benchmarks/memory.py read the policy
through it; `AlgoConfig.pack_len` / `head_len` / `logits_chunk` reach it as `packed`, `head_index`
and `logits_chunk` (`jarl.packing`; `in_chunks` for the output head a chunk of slots at a time).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jarl import algos
from jarl.models import LM
from jarl.slots import gather_logprobs, source_slots
from jarl.types import Trajectory

Array = jax.Array


def in_chunks(fn: Callable, xs: Any, size: int, axis: int, remat: bool = False) -> Any:
  """fn(xs) computed `size` entries of `axis` at a time (lax.map; every array of xs split along `axis`,
  the last chunk zero-padded) and put back together along `axis`; fn(xs) at once when one chunk
  covers it. `remat`: each chunk under jax.checkpoint, so its backward pass recomputes the chunk
  instead of keeping its intermediates."""
  n = jax.tree.leaves(xs)[0].shape[axis]
  if not size or size >= n:
    return fn(xs)
  chunks = -(-n // size)

  def split(x):
    x = jnp.pad(x, [(0, chunks * size - n if d == axis else 0) for d in range(x.ndim)])
    return jnp.moveaxis(x.reshape(x.shape[:axis] + (chunks, size) + x.shape[axis + 1:]), axis, 0)

  def join(y):
    y = jnp.moveaxis(y, 0, axis)
    return jax.lax.slice_in_dim(y.reshape(y.shape[:axis] + (chunks * size,) + y.shape[axis + 2:]), 0, n, axis=axis)
  out = jax.lax.map(jax.checkpoint(fn) if remat else fn, jax.tree.map(split, xs))
  return jax.tree.map(join, out)


def policy_outputs(lm: LM, params, batch, slots, detach_value: bool = False, logits_chunk: int = 0,
                   packed: dict | None = None, head_index: Array | None = None) -> tuple[Array, Array, Array | None]:
  """(log-prob, entropy, value) at each policy slot [B, P] from one forward over the [B, T] slots.

  The token in slot s was sampled from the logits of the row's last valid slot before s
  (`source_slots`). `slots` (static columns, `Layout.policy_slots`) limits the output
  head to the P slots that can hold sampled tokens; None means every slot (P = T).
  `detach_value`: the value head reads the hidden states through a stop_gradient, so a value
  loss moves the head only. `logits_chunk`: the head `logits_chunk` slots at a time, each chunk
  recomputed in the backward pass (`AlgoConfig.logits_chunk`). `packed` (`pack_slots` of this
  batch): the forward runs over the packed rows instead, and each slot reads its source's hidden
  state there; the same outputs. `head_index` (`pack_trained` of the batch's loss mask at the
  policy slots): the head only at those slots, log-prob and entropy 0 at the others.
  """
  tokens_BxP = batch["tokens"] if slots is None else batch["tokens"][:, slots]
  B, P = tokens_BxP.shape
  if packed is None:
    h_RxLxD, _ = lm.apply(params, batch["tokens"], batch["positions"], None, batch["valid"], method="hidden")
    row_BxP = None  # each slot's own row
    col_BxP = source_slots(batch["valid"]) if slots is None else source_slots(batch["valid"])[:, slots]
  else:
    h_RxLxD, _ = lm.apply(params, packed["tokens"], packed["positions"], None, packed["valid"], method="hidden",
                          segment_BxT=packed["segment"])
    row_BxP, col_BxP = ((packed["source_row"], packed["source_col"]) if slots is None
                        else (packed["source_row"][:, slots], packed["source_col"][:, slots]))

  def head(h_and_tokens):  # the output head only where tokens were sampled
    h_BxCxD, tokens_BxC = h_and_tokens
    return algos.token_logprob_entropy(lm.apply(params, h_BxCxD, method="logits"), tokens_BxC)

  def hidden(row, col_BxC):  # the hidden states that predict the tokens at these slots
    return (jnp.take_along_axis(h_RxLxD, col_BxC[..., None], axis=1) if row is None else h_RxLxD[row, col_BxC])
  if head_index is None:
    logp_BxP, entropy_BxP = in_chunks(head, (hidden(row_BxP, col_BxP), tokens_BxP), logits_chunk, axis=1,
                                      remat=True)
  else:  # the trained slots' hidden states, packed; the outputs put back at their slots
    at_BxL = jnp.minimum(head_index, B * P - 1)
    flat = lambda x_BxP: x_BxP.reshape(-1)[at_BxL]  # noqa: E731
    h_BxLxD = hidden(at_BxL // P if row_BxP is None else flat(row_BxP), flat(col_BxP))
    outputs = in_chunks(head, (h_BxLxD, flat(tokens_BxP)), logits_chunk, axis=1, remat=True)
    logp_BxP, entropy_BxP = (jnp.zeros(B * P, x.dtype).at[head_index.reshape(-1)].set(x.reshape(-1), mode="drop")
                             .reshape(B, P) for x in outputs)
  values_BxP = None
  if lm.kind == "policy_value":
    h_BxPxD = hidden(row_BxP, col_BxP)
    values_BxP = lm.apply(params, jax.lax.stop_gradient(h_BxPxD) if detach_value else h_BxPxD, method="value")
  return logp_BxP, entropy_BxP, values_BxP


def replay_logprobs(lm: LM, params, traj: Trajectory) -> Array:
  """Log-probs [B, T] of every slot's token from ONE full forward (0 where loss_mask is off).

  The token in slot s was sampled from the logits of the row's previous valid slot, so
  each slot reads the logits of the last valid slot before it.
  """
  h_BxTxD, _ = lm.apply(params, traj.tokens, traj.positions, None, traj.valid, method="hidden")
  logits_BxTxV = lm.apply(params, h_BxTxD, method="logits")  # (plain and policy_value handles alike)
  return gather_logprobs(logits_BxTxV, traj.tokens, traj.valid, traj.loss_mask)
