"""Per-segment credit for the turn schema: ACT, VERDICT and REVISE tokens each get their own advantage.

With a critique, the rollout records both branches of every turn (`Trajectory.attempts`):
the env's answer to the first attempt (ACT) and to the revision (REVISE; every row samples
one, rows that accepted drop it from their context), each stepped from the turn's state.
So a verdict's consequence is known exactly, not estimated. A credit is a registered

    credit(traj, *, group_size, **hparams) -> adv_BxN      (one advantage per turn)

and `apply` writes it over the main estimator's advantage on one segment's tokens. In a
config: `algo.segment_credit = dict(act="first_attempt", verdict="counterfactual",
revise=dict(name="score", alpha=1.0))`; segments not named keep the main estimator's
advantage (e.g. PLAN: the episode-level group advantage). A credit that reads the critic
(`plan_value`) is registered with `needs_values = True` and gets the value at every slot,
`values_BxT`; it needs a value-head model and a critic estimator (gae, gae_turns).

Per-turn groups: at turn n the group of task g is its rows that play turn n (rows
g*G .. g*G+G-1), so a group baseline compares samples of the same task and turn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jarl.agent import POLICY_SEGMENTS, Segment
from jarl.algos.registry import get_credit, register_credit
from jarl.slots import source_slots
from jarl.types import Trajectory

Array = jax.Array


def _attempts(traj: Trajectory) -> dict:
  if not traj.attempts:
    raise ValueError("segment credit from attempts needs a critique (AgentConfig.critique_budget > 0) and the "
                     "in-graph rollout, which records both branches of every turn")
  return traj.attempts


def group_centered(x_BxN: Array, live_BxN: Array, group_size: int, scale: bool, eps: float = 1e-6) -> Array:
  """x minus the mean of its per-turn group (live rows only), divided by the group's std if `scale`."""
  B, N = x_BxN.shape
  x_GxSxN = jnp.where(live_BxN, x_BxN, 0.0).reshape(B // group_size, group_size, N)
  live_GxSxN = live_BxN.reshape(x_GxSxN.shape)
  n_Gx1xN = jnp.maximum(live_GxSxN.sum(1, keepdims=True), 1)
  mean_Gx1xN = x_GxSxN.sum(1, keepdims=True) / n_Gx1xN
  adv_GxSxN = x_GxSxN - mean_Gx1xN
  if scale:
    var_Gx1xN = jnp.where(live_GxSxN, adv_GxSxN ** 2, 0.0).sum(1, keepdims=True) / n_Gx1xN
    adv_GxSxN = adv_GxSxN / (jnp.sqrt(var_Gx1xN) + eps)
  return jnp.where(live_BxN, adv_GxSxN.reshape(B, N), 0.0)


@register_credit("first_attempt")
def first_attempt(traj: Trajectory, *, group_size: int, scale: bool = True) -> Array:
  """ACT: the group advantage (GRPO; Dr. GRPO with scale=False) of the first attempt's reward r1.

  The first attempt is judged on its own, whatever the verdict did with it afterwards.
  """
  return group_centered(_attempts(traj)["first_reward"], traj.turn_live, group_size, scale)


@register_credit("counterfactual")
def counterfactual(traj: Trajectory, *, group_size: int, calibration: float = 0.0,
                   revise_cost: float = 0.0) -> Array:
  """VERDICT (and CRITIQUE): the exact counterfactual difference of the verdict's choice,

      A = (r2 - r1) if the verdict said revise, (r1 - r2) if it accepted
          + calibration * (+1 if the verdict was right about the first attempt, else -1)
          - revise_cost * [revise],

  with r1, r2 the rewards of the first attempt and the revision from the same state. A
  verdict that revises a correct answer into a wrong one is charged; one that revises for
  free when both are right earns nothing, so "always revise" is not learned for free
  (`revise_cost` also charges the revision's tokens). The calibration term rewards a
  verdict that says revise exactly when the first attempt failed (info["success"]).
  """
  a = _attempts(traj)
  revise_BxN = traj.verdict == 1
  gain_BxN = a["revised_reward"] - a["first_reward"]
  right_BxN = revise_BxN == ~a["first_success"]
  adv_BxN = (jnp.where(revise_BxN, gain_BxN, -gain_BxN) + calibration * jnp.where(right_BxN, 1.0, -1.0)
             - revise_cost * revise_BxN)
  return jnp.where(traj.turn_live, adv_BxN, 0.0)


@register_credit("score")
def score(traj: Trajectory, *, group_size: int, alpha: float = 1.0, scale: bool = False) -> Array:
  """REVISE: SCoRe shaping (Kumar et al. 2024, "Training LMs to self-correct via RL"):

      r_hat = r2 + alpha (r2 - r1),   A = r_hat - mean over the turn's group of r_hat

  a bonus for improving on the first attempt, on top of the revision's own reward. Every
  row's revision (those dropped by an accepting verdict too) enters the group baseline; only
  revisions that were kept are trained on (the others are not in the context).
  """
  a = _attempts(traj)
  r_hat_BxN = a["revised_reward"] + alpha * (a["revised_reward"] - a["first_reward"])
  return group_centered(r_hat_BxN, traj.turn_live, group_size, scale)


@register_credit("plan_value")
def plan_value(traj: Trajectory, *, group_size: int, values_BxT: Array) -> Array:
  """PLAN: a turn-level critic's verdict on the plan, A = V(after the plan) - V(before it).

  V(before) is the value at the slot that predicted the plan's first sampled token (the
  state the plan was chosen in, header read), V(after) the value at its last sampled token:
  the TD advantage of the plan as one action with no reward of its own (gamma = 1). A plan
  that makes the critic expect more of the rest of the episode gets a positive advantage;
  turns without sampled PLAN tokens get 0. The critic is the one the main estimator trains.
  """
  N = traj.turn_reward.shape[1]
  T = traj.tokens.shape[1]
  plan_BxT = traj.loss_mask & (traj.segment == int(Segment.PLAN))
  plan_BxNxT = plan_BxT[:, None, :] & (traj.turn[:, None, :] == jnp.arange(N)[None, :, None])
  slot_T = jnp.arange(T)
  first_BxN = jnp.where(plan_BxNxT, slot_T, T).min(-1)
  last_BxN = jnp.where(plan_BxNxT, slot_T, -1).max(-1)
  has_BxN = last_BxN >= 0
  source_BxT = source_slots(traj.valid)
  before_BxN = jnp.take_along_axis(source_BxT, jnp.clip(first_BxN, 0, T - 1), axis=1)
  value = lambda slot_BxN: jnp.take_along_axis(values_BxT, jnp.clip(slot_BxN, 0, T - 1), axis=1)  # noqa: E731
  return jnp.where(has_BxN & traj.turn_live, value(last_BxN) - value(before_BxN), 0.0)


plan_value.needs_values = True


def needs_values(segment_credit: tuple) -> list[str]:
  """The credit names in a spec() tuple that read the critic's values."""
  return [name for _, name, _ in segment_credit if getattr(get_credit(name), "needs_values", False)]


def spec(segment_credit) -> tuple:
  """{segment: name | {name, **hparams}} (or its sorted-items tuple) -> ((segment, name, hparams), ...), checked."""
  out = []
  for item in (segment_credit.items() if isinstance(segment_credit, dict) else segment_credit):
    segment, choice = item[0], item[1]
    if len(item) == 3:  # already normalised
      name, hparams = item[1], item[2]
    elif isinstance(choice, str):
      name, hparams = choice, ()
    else:
      hparams = dict(choice)
      name = hparams.pop("name", None)
      hparams = tuple(sorted(hparams.items()))
    policy = [s.name.lower() for s in POLICY_SEGMENTS]
    if segment not in policy:
      raise ValueError(f"segment_credit: unknown segment {segment!r}; policy segments: {policy}")
    get_credit(name)
    out.append((segment, name, tuple(hparams)))
  return tuple(sorted(out))


def apply(traj: Trajectory, adv_BxT: Array, segment_credit: tuple, group_size: int,
          values_BxT: Array | None = None) -> Array:
  """Overwrite adv_BxT on each named segment's policy tokens with its credit.

  `segment_credit`: ((segment name, credit name, ((hparam, value), ...)), ...); `values_BxT`:
  the critic's value at every slot, for credits that read it.
  """
  turn_BxT = jnp.clip(traj.turn, 0, traj.turn_reward.shape[1] - 1)
  for segment, name, hparams in segment_credit:
    fn = get_credit(name)
    extra = {}
    if getattr(fn, "needs_values", False):
      if values_BxT is None:
        raise ValueError(f"segment credit {name!r} reads the critic: use a value-head model and a critic "
                         "advantage estimator (gae, gae_turns)")
      extra["values_BxT"] = values_BxT
    adv_BxN = fn(traj, group_size=group_size, **dict(hparams), **extra)
    on_BxT = traj.loss_mask & (traj.segment == int(Segment[segment.upper()]))
    adv_BxT = jnp.where(on_BxT, jnp.take_along_axis(adv_BxN, turn_BxT, axis=1), adv_BxT)
  return adv_BxT


def critique_metrics(traj: Trajectory) -> dict:
  """Self-critique at a glance, over the played turns: success of the first attempt, of every
  revision, and of the answer the verdict chose; how often it revised; flips wrong -> right
  and right -> wrong (fractions of turns); the verdict's precision and recall at spotting a
  failed first attempt."""
  a = traj.attempts
  live = traj.turn_live
  revise = live & (traj.verdict == 1)
  first, second = a["first_success"] & live, a["revised_success"] & live
  wrong = live & ~first
  n = jnp.maximum(live.sum(), 1)
  rate = lambda x: x.sum() / n  # noqa: E731
  return {"first_success": rate(first), "revised_success": rate(second),
          "final_success": rate(jnp.where(revise, second, first)), "revise_rate": rate(revise),
          "wrong_to_right": rate(revise & wrong & second), "right_to_wrong": rate(revise & first & ~second),
          "verdict_precision": (revise & wrong).sum() / jnp.maximum(revise.sum(), 1),
          "verdict_recall": (revise & wrong).sum() / jnp.maximum(wrong.sum(), 1)}
