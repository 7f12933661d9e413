"""Constrained RL: a per-episode cost budget enforced with a learned Lagrange multiplier.

Environments may report a per-step cost next to the reward (`info["cost"]`: stepping
into a hole, a forbidden tool call, an action outside the rules). The constrained
problem (Altman 1999; PPO-Lagrangian, Ray et al. 2019 "Benchmarking Safe Exploration")

    max_pi  E[R]   subject to   E[C] <= d          (C: the episode's summed cost, d: the budget)

is solved through its Lagrangian  max_pi min_{lam >= 0}  E[R] - lam (E[C] - d):
the policy step trains on the penalised reward r_t - lam c_t with any registered
estimator (GRPO, RLOO, GAE, ...), and the multiplier takes a projected gradient step
on the dual,

    lam <- max(0, lam + lr_lam (mean_batch C - d)),

growing while the batch's mean episode cost is over budget and shrinking (to 0) once
it is under. The multiplier lives in the TrainState, so it is checkpointed and
resumed with the policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jarl.types import Trajectory

Array = jax.Array


def turn_costs(traj: Trajectory) -> Array:
  """[B, N] cost of each played turn (`info["cost"]`, 0 for turns not played)."""
  if "cost" not in traj.info:
    raise ValueError("a cost budget needs an environment that reports info['cost'] (e.g. frozenlake)")
  return jnp.where(traj.turn_live, traj.info["cost"].astype(jnp.float32), 0.0)


def turn_end_slots(traj: Trajectory) -> Array:
  """[B, N] the last policy slot of each turn (where the rollout puts the turn's reward), -1 if none."""
  B, N = traj.turn_reward.shape
  T = traj.loss_mask.shape[1]
  slot_BxT = jnp.where(traj.loss_mask, jnp.arange(T), -1)
  return jnp.full((B, N), -1).at[jnp.arange(B)[:, None], jnp.clip(traj.turn, 0, N - 1)].max(slot_BxT)


def penalize(traj: Trajectory, lagrange: Array) -> Trajectory:
  """The trajectory with rewards r - lam * c, per turn and at each turn's reward slot."""
  cost_BxN = turn_costs(traj)
  end_BxN = turn_end_slots(traj)
  B, T = traj.reward.shape
  rows_BxN = jnp.broadcast_to(jnp.arange(B)[:, None], end_BxN.shape)
  cost_BxT = jnp.zeros((B, T)).at[rows_BxN, jnp.where(end_BxN >= 0, end_BxN, T)].add(cost_BxN, mode="drop")
  return traj.replace(reward=traj.reward - lagrange * cost_BxT, turn_reward=traj.turn_reward - lagrange * cost_BxN)


def dual_step(lagrange: Array, episode_cost_B: Array, budget: float, lr: float) -> Array:
  """Projected dual ascent: lam + lr (mean C - d), clipped at 0."""
  return jnp.maximum(lagrange + lr * (episode_cost_B.mean() - budget), 0.0)
