"""Live-row compaction: a batched step run over only the rows that need it, gathered into a smaller batch.

    sizes = compaction.buckets(64, 4)                              # [64, 32, 16, 8]
    state = compaction.on_rows(step, state, active_B, sizes)       # step(state_b, rows_b) -> state_b
    state = compaction.decode(step, state, step_of, active_of, end, sizes, every)  # a whole decode loop

A decode loop over B rows keeps computing rows that stopped (their reply ended, their episode is
over) until the last one does. `on_rows` takes the rows still active (and, to fill the bucket, as
many others as it takes) out of every array of a state pytree — KV caches included, whatever their
layout — runs the step on that smaller batch and puts the rows back. Shapes are static, so each
bucket size is its own compiled branch, and the smallest bucket that holds the active rows runs.
A decode loop stays in its bucket for as long as its rows need it (`keeps_bucket`): the rows are gathered
again only once they fit a smaller one, so a segment pays at most one gather per bucket size.
`SamplingConfig.compact_every` turns it on in the rollout (`jarl.rollout`) and in `jarl.sampling.generate`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jarl.models import KVCache

Array = jax.Array


def run_if(pred: Array, fn: Callable, c):
  """`fn(c)` if pred else c, as a while loop of at most one step: XLA updates a while loop's carry in place,
  where a `lax.cond` copies every buffer its branches pass through (the KV cache; and the params, which
  the layer scan inside the branch reads)."""
  return jax.lax.while_loop(lambda s: s[0], lambda s: (jnp.zeros((), bool), fn(s[1])), (pred, c))[1]


def buckets(B: int, count: int, shards: int = 1) -> list[int]:
  """The batch sizes to compute at: B, B/2, ... (`count` of them, while they divide B and split evenly
  over `shards` batch shards)."""
  sizes = [B // 2 ** j for j in range(count) if B % 2 ** j == 0]
  return [b for b in sizes if b % shards == 0] or [B]


def _is_cache(x) -> bool:
  return isinstance(x, KVCache)


def take_rows(tree: Any, rows_b: Array) -> Any:
  """Rows `rows_b` [b] of every per-row array in `tree` (leading axis B; KV caches by their batch axis);
  scalars pass through."""
  def take(x):
    return x.take_rows(rows_b) if _is_cache(x) else x[rows_b] if x.ndim else x
  return jax.tree.map(take, tree, is_leaf=_is_cache)


def put_rows(tree: Any, rows_b: Array, part: Any) -> Any:
  """`tree` with rows `rows_b` (distinct) replaced by `part`'s (from `take_rows`); scalars are `part`'s."""
  def put(x, y):
    return x.put_rows(rows_b, y) if _is_cache(x) else x.at[rows_b].set(y) if x.ndim else y
  return jax.tree.map(put, tree, part, is_leaf=_is_cache)


def on_rows(fn: Callable, state: Any, active_B: Array, sizes: list[int]) -> Any:
  """`fn(state, rows_b) -> state` over the rows in active_B, gathered (the active ones first, in order) into
  the smallest of `sizes` that holds them, then put back; the full batch (sizes[0]) needs no gather."""
  B = active_B.shape[0]
  size = jnp.min(jnp.where(jnp.asarray(sizes) >= active_B.sum(), jnp.asarray(sizes), B))
  rows_B = jnp.argsort(~active_B, stable=True)
  for b in sizes:
    def gathered(state, b=b):
      if b == B:
        return fn(state, jnp.arange(B))
      rows_b = rows_B[:b]
      return put_rows(state, rows_b, fn(take_rows(state, rows_b), rows_b))
    state = run_if(size == b, gathered, state)
  return state


def keeps_bucket(active_b: Array, sizes: list[int], step: Array, start: Array, every: int) -> Array:
  """Whether a decode loop over a bucket of len(active_b) rows, gathered at step `start`, runs `step`: some
  row is still active, and, at every `every`-th step after `start`, the active rows do not fit the next
  smaller bucket yet (when they do, the loop ends and its caller gathers them into that one)."""
  smaller = max([s for s in sizes if s < active_b.shape[0]], default=0)
  check = (step > start) & ((step - start) % every == 0)
  return jnp.any(active_b) & ~(check & (active_b.sum() <= smaller))


def decode(step: Callable, state: Any, step_of: Callable, active_of: Callable, end, sizes: list[int],
           every: int) -> Any:
  """A decode loop with live-row compaction: `step(state, rows_b) -> state` (one step for the rows rows_b,
  whose state this is) until step_of(state) reaches `end` or active_of(state) has no row left; the active
  rows are gathered into the smallest of `sizes` that holds them and kept there while they need it
  (`keeps_bucket`, checked every `every` steps)."""
  def phase(state):
    start = step_of(state)

    def in_bucket(state, rows_b):
      def go_on(state):
        return (step_of(state) < end) & keeps_bucket(active_of(state), sizes, step_of(state), start, every)
      return jax.lax.while_loop(go_on, lambda state: step(state, rows_b), state)
    return on_rows(in_bucket, state, active_of(state), sizes)
  return jax.lax.while_loop(lambda state: (step_of(state) < end) & jnp.any(active_of(state)), phase, state)


def row_keyed(choose: Callable) -> Callable:
  """`choose(logits_BxV, key)` as `(logits_bxV, key, rows_b)`, one row at a time with the key folded with the
  row's index: a row's draw does not depend on which rows share its batch."""
  def choose_rows(logits_bxV: Array, key: Array, rows_b: Array):
    return jax.vmap(lambda logits_V, row: jax.tree.map(lambda x: x[0], choose(logits_V[None], jax.random.fold_in(
        key, row))))(logits_bxV, rows_b)
  return choose_rows
