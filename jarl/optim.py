"""The optax optimizer from config: clip by global norm, AdamW on a warmup + decay schedule, and a
guard that skips (and counts) any step whose gradients or updates are not finite.

    tx = make_optimizer(OptimConfig(lr=1e-4, schedule="cosine", warmup_steps=10, total_steps=500))
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  lr: float = 1e-4
  schedule: str = "constant"  # after a linear warmup from 0
  warmup_steps: int = 0
  total_steps: int = 1000  # for decaying schedules
  end_lr_fraction: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.0
  max_grad_norm: float = 1.0

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"unknown schedule {self.schedule!r}; available: {list(SCHEDULES)}")


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
  """Linear warmup from 0, then constant, cosine or linear decay to lr * end_lr_fraction."""
  decay_steps = max(cfg.total_steps - cfg.warmup_steps, 1)
  after = {"constant": optax.constant_schedule(cfg.lr),
           "cosine": optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.end_lr_fraction),
           "linear": optax.linear_schedule(cfg.lr, cfg.lr * cfg.end_lr_fraction, decay_steps)}[cfg.schedule]
  if not cfg.warmup_steps:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), after], [cfg.warmup_steps])


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  """clip by global norm -> AdamW on the schedule, skipping steps that are not finite (skip_nonfinite)."""
  return skip_nonfinite(optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                                    optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                                weight_decay=cfg.weight_decay)))


class SkipNonfiniteState(NamedTuple):
  inner_state: Any
  total_notfinite: Array  # int32: steps skipped so far


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner`, except that a step whose gradients or updates hold a NaN or inf is skipped whole
  (zero update, inner state unchanged) and counted. optax.apply_if_finite checks the gradients
  only: an infinite learning rate turns finite gradients into NaN params. (Finite updates that
  push params past float32's range make NaN logits, which stop a run naming the step; checking
  the new params here too made the update's compile 1.5x slower for a 30-layer model.)"""
  def init(params):
    return SkipNonfiniteState(inner.init(params), jnp.zeros((), jnp.int32))

  def update(grads, state, params=None):
    updates, inner_state = inner.update(grads, state.inner_state, params)
    # One reduction per leaf: x * 0 is NaN exactly where x is NaN or inf.
    finite = jnp.isfinite(sum(jnp.sum(x.astype(jnp.float32) * 0.0) for x in jax.tree.leaves((grads, updates))))
    updates, inner_state = jax.lax.cond(finite, lambda: (updates, inner_state),
                                        lambda: (jax.tree.map(jnp.zeros_like, updates), state.inner_state))
    return updates, SkipNonfiniteState(inner_state, state.total_notfinite + (~finite).astype(jnp.int32))

  return optax.GradientTransformation(init, update)
