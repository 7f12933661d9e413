"""Name -> function tables for advantage estimators, policy losses, KL estimators and loss aggregation.

Configs pick algorithms by name; the built-ins register themselves when `jarl.algos`
is imported (importing this module imports the package first):

    estimate = get_advantage("grpo")(traj, group_size=8)
    loss, metrics = get_policy_loss("ppo_clip")(logp_BxT, traj.logprob, estimate.adv_BxT, traj.loss_mask)

Contracts of each table (see advantages.py and losses.py):
  advantage    estimator(traj, *, group_size, values_BxT=None, **hparams) -> Estimate(adv_BxT, returns_BxT)
  policy loss  loss(logp_BxT, old_logp_BxT, adv_BxT, mask_BxT, **hparams) -> (loss, metrics)
  kl           kl(logp_BxT, ref_logp_BxT) -> kl_BxT (per token)
  aggregation  agg(loss_BxT, mask_BxT, norm_len=None) -> scalar
  credit       credit(traj, *, group_size, **hparams) -> adv_BxN (per turn, for one segment's tokens)
"""

from __future__ import annotations

from typing import Callable

_TABLES: dict[str, dict[str, Callable]] = {
    "advantage estimator": {}, "policy loss": {}, "KL estimator": {}, "loss aggregation": {}, "segment credit": {}}


def _register(kind: str, name: str) -> Callable[[Callable], Callable]:
  def add(fn):
    if name in _TABLES[kind]:
      raise ValueError(f"{kind} {name!r} is already registered by {_TABLES[kind][name].__qualname__}")
    _TABLES[kind][name] = fn
    return fn
  return add


def _get(kind: str, name: str) -> Callable:
  if name not in _TABLES[kind]:
    raise ValueError(f"unknown {kind} {name!r}; available: {sorted(_TABLES[kind])}")
  return _TABLES[kind][name]


def register_advantage(name: str):
  """Decorator: `@register_advantage("grpo")` makes a Trajectory estimator available to `get_advantage`."""
  return _register("advantage estimator", name)


def register_policy_loss(name: str):
  """Decorator: `@register_policy_loss("ppo_clip")` makes a policy loss available to `get_policy_loss`."""
  return _register("policy loss", name)


def register_kl(name: str):
  """Decorator: `@register_kl("k3")` makes a per-token KL estimator available to `get_kl`."""
  return _register("KL estimator", name)


def register_aggregation(name: str):
  """Decorator: `@register_aggregation("token_mean")` makes a loss aggregation available to `get_aggregation`."""
  return _register("loss aggregation", name)


def register_credit(name: str):
  """Decorator: `@register_credit("counterfactual")` makes a per-segment credit available to `get_credit`."""
  return _register("segment credit", name)


def get_advantage(name: str) -> Callable:
  return _get("advantage estimator", name)


def get_policy_loss(name: str) -> Callable:
  return _get("policy loss", name)


def get_kl(name: str) -> Callable:
  return _get("KL estimator", name)


def get_aggregation(name: str) -> Callable:
  return _get("loss aggregation", name)


def get_credit(name: str) -> Callable:
  return _get("segment credit", name)


def registered() -> dict[str, list[str]]:
  """Every table's names, e.g. {"advantage estimator": ["dr_grpo", "gae", ...], ...}."""
  return {kind: sorted(table) for kind, table in _TABLES.items()}
