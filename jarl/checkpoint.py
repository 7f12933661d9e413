"""orbax checkpoints: async saves, keep the last N, keep the best by an eval metric, resume.

    ckpt = Checkpointer(workdir / "checkpoints", keep=3)
    ckpt.save(step, state, meta={"config": ..., "history": ...})   # async
    ckpt.save_best(step, state, meta, score)                        # only if better
    state, meta = ckpt.restore(abstract_state)                      # latest step

Two orbax managers: `latest/` keeps the last `keep` steps (what --resume reads) and
`best/` keeps the single best checkpoint by score. Every process calls save/restore
with the same directory, on a file system all hosts share (orbax coordinates
multi-host writes; each manager has its own barrier names).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


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
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

  def save(self, step: int, state: Any, meta: dict, force: bool = False) -> None:
    self.latest.save(step, args=self._args(state, meta), force=force)

  def save_best(self, step: int, state: Any, meta: dict, score: float) -> None:
    self.best.save(step, args=self._args(state, meta), metrics={"score": float(score)}, force=True)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore(self, abstract_state: Any, step: int | None = None, best: bool = False) -> tuple[Any, dict]:
    """(state, meta) of `step` (default: the latest, or the best with best=True)."""
    manager = self.best if best else self.latest
    step = (manager.best_step() if best else manager.latest_step()) if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"checkpoint {manager.directory}/{step} does not fit this run's model or optimizer "
                       f"(different config?): {e}") from e
    return restored["state"], restored["meta"]

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
