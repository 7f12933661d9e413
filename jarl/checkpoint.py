"""orbax checkpoints: async saves, keep the last N, keep the best by an eval metric, resume.

    ckpt = Checkpointer(workdir / "checkpoints", keep=3)
    ckpt.save(step, state, meta={"config": ..., "history": ...})   # async
    ckpt.save_best(step, state, meta, score)                        # only if better
    state, meta = ckpt.restore(abstract_state)                      # latest step

Two orbax managers: `latest/` keeps the last `keep` steps (what --resume reads) and
`best/` keeps the single best checkpoint by score. Each save records a checksum of every
array (the sum of its bits, in meta["checksums"]); a restore verifies it and that every float is finite,
and falls back from a damaged step (unreadable, truncated, bit-flipped, half-written) to the
newest good one, with a warning that names the damaged step and why. Every process calls save/restore
with the same directory, on a file system all hosts share (orbax coordinates
multi-host writes; each manager has its own barrier names).
"""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jarl import distributed

log = logging.getLogger(__name__)


class CheckpointDamaged(ValueError):
  """A checkpoint step that cannot be read back as it was written."""


@jax.jit
def _leaf_checksum(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  x = jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.asarray(True)
  x = x.astype(jnp.uint8) if x.dtype == jnp.bool_ else x
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
  return jnp.sum(jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32), dtype=jnp.uint32), finite


def checksums(state: Any) -> tuple[np.ndarray, bool]:
  """(one uint32 per array leaf: the sum of its raw bits mod 2**32, whether every float is finite).
  Integer sums do not depend on the summation order, so any mesh gives the same checksum, and a
  flipped bit always changes it. Leaf by leaf (a restored state's leaves may sit on different devices),
  each finished before the next starts: many small collective programs in flight at once can deadlock
  XLA:CPU's fake devices on a loaded machine (a rendezvous waits for a thread that never comes)."""
  sums = distributed.to_host([jax.block_until_ready(_leaf_checksum(x)) for x in jax.tree.leaves(state)])
  return np.asarray([int(total) for total, _ in sums], np.int64), all(bool(ok) for _, ok in sums)


class Checkpointer:
  def __init__(self, directory: str | pathlib.Path, keep: int = 3, async_save: bool = True):
    directory = pathlib.Path(directory).absolute()

    def options(name, **kwargs):  # own barrier names: both managers may save the same step at once
      return ocp.CheckpointManagerOptions(enable_async_checkpointing=async_save, **kwargs,
                                          multiprocessing_options=ocp.options.MultiprocessingOptions(
                                              barrier_sync_key_prefix=name))
    self.latest = ocp.CheckpointManager(directory / "latest", options=options("latest", max_to_keep=keep))
    self.best = ocp.CheckpointManager(directory / "best", options=options(
        "best", max_to_keep=1, best_fn=lambda m: m["score"], best_mode="max"))
    self.directory = directory

  @staticmethod
  def _args(state, meta):
    meta = dict(meta, checksums=checksums(state)[0].tolist())
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

  def save(self, step: int, state: Any, meta: dict, force: bool = False) -> None:
    self.latest.save(step, args=self._args(state, meta), force=force)

  def save_best(self, step: int, state: Any, meta: dict, score: float) -> None:
    self.best.save(step, args=self._args(state, meta), metrics={"score": float(score)}, force=True)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore(self, abstract_state: Any, step: int | None = None, best: bool = False) -> tuple[Any, dict]:
    """(state, meta) of `step`, or else of the latest good step (or the best, with best=True).

    Without `step`, a damaged checkpoint is skipped for the next older one, with a warning; if
    none is good, the error lists why each failed (damage, or a different model or optimizer).
    """
    manager = self.best if best else self.latest
    steps = [step] if step is not None else [manager.best_step()] if best else sorted(manager.all_steps())[::-1]
    steps = [s for s in steps if s is not None]
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    failures = []
    for candidate in steps:
      try:
        state, meta = self._restore_step(manager, candidate, abstract_state)
      except Exception as e:  # noqa: BLE001  (orbax, tensorstore and json raise many kinds for damaged files)
        failures.append(f"step {candidate}: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
        continue
      if failures:
        log.warning("damaged checkpoint(s) moved to %s: %s; resuming from step %d, the newest good one",
                    self.directory / "damaged", "; ".join(failures), candidate)
        if not best and step is None:  # out of orbax's way: the resumed run saves those steps anew
          for damaged in steps[:steps.index(candidate)]:
            self._move_aside(manager, damaged)
      return state, meta
    raise CheckpointDamaged(f"no checkpoint in {manager.directory} could be restored: they are damaged, or were "
                            f"written for a different model or optimizer (config): " + "; ".join(failures))

  def _move_aside(self, manager, step: int) -> None:
    if jax.process_index() == 0:
      (self.directory / "damaged").mkdir(exist_ok=True)
      (pathlib.Path(manager.directory) / str(step)).rename(self.directory / "damaged" / f"{step}-{time.time():.0f}")
    distributed.barrier(f"jarl-damaged-{step}-moved")
    manager.reload()

  @staticmethod
  def _restore_step(manager, step: int, abstract_state: Any) -> tuple[Any, dict]:
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    state, meta = restored["state"], restored["meta"]
    if not isinstance(meta, dict):
      raise CheckpointDamaged(f"its meta is {meta!r:.100}, not a dict")
    got, finite = checksums(state)
    if not finite:
      raise CheckpointDamaged("it holds non-finite values")
    saved = np.asarray(meta.get("checksums", got), np.int64)  # (checkpoints from before checksums: none to check)
    if saved.shape != got.shape or (saved != got).any():
      bad = np.flatnonzero(saved != got)[:3].tolist() if saved.shape == got.shape else "count"
      raise CheckpointDamaged(f"arrays {bad} of {len(got)} do not match the checksums saved with them")
    return state, meta

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
