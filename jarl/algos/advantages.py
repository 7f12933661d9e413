"""Advantage estimators: core math on plain arrays, and registered adapters over a Trajectory.

Core functions take returns or rewards with shapes in their names. Groups are
consecutive rows: with group size G, rows g*G .. g*G+G-1 are the G samples of task g
(the rollout's layout), so B must be a multiple of G.

Every registered adapter has the same signature and return convention:

    estimator(traj, *, group_size, values_BxT=None, **hparams) -> Estimate(adv_BxT, returns_BxT)

`adv_BxT` is the advantage of each policy token (zero where `traj.loss_mask` is off).
`returns_BxT` is a regression target for a critic on the same tokens: GAE's
lambda-returns; the episode return for episode-level estimators; the turn's discounted
return-to-go for turn-level ones. Estimators that need no critic ignore `values_BxT`.
`values_BxT[b, s]` is the critic's value of the context before policy token s (read,
like `logprob`, from the previous valid slot's hidden state).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jarl.agent import Segment
from jarl.algos.losses import masked_mean
from jarl.algos.registry import register_advantage
from jarl.types import Trajectory

Array = jax.Array


class Estimate(NamedTuple):
  """What every registered estimator returns (zero off `traj.loss_mask`)."""
  adv_BxT: Array
  returns_BxT: Array


def _check_groups(n_rows: int, group_size: int) -> None:
  if group_size < 1 or n_rows % group_size:
    raise ValueError(f"batch of {n_rows} rows is not a whole number of groups of {group_size}")


def _grouped(x_B: Array, group_size: int) -> Array:
  """[B] -> [B // G, G] (rows g*G .. g*G+G-1 are task g)."""
  chex.assert_rank(x_B, 1)
  _check_groups(x_B.shape[0], group_size)
  return x_B.astype(jnp.float32).reshape(-1, group_size)


def grpo(returns_B: Array, group_size: int, eps: float = 1e-6, scale: bool = True) -> Array:
  """GRPO (Shao et al. 2024, DeepSeekMath): A_i = (r_i - mean_group r) / (std_group r + eps).

  std is the population std (ddof=0); TRL and verl use the unbiased one, larger by
  sqrt(G / (G - 1)). `scale=False` skips the division (Dr. GRPO).
  """
  r_GxS = _grouped(returns_B, group_size)
  adv = r_GxS - r_GxS.mean(1, keepdims=True)
  if scale:
    adv = adv / (r_GxS.std(1, keepdims=True) + eps)
  return adv.reshape(-1)


def dr_grpo(returns_B: Array, group_size: int) -> Array:
  """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): A_i = r_i - mean_group r."""
  return grpo(returns_B, group_size, scale=False)


def rloo(returns_B: Array, group_size: int) -> Array:
  """RLOO (Ahmadian et al. 2024): A_i = r_i - 1/(G-1) sum_{j != i} r_j (leave-one-out baseline)."""
  if group_size < 2:
    raise ValueError(f"rloo needs group_size >= 2, got {group_size}")
  r_GxS = _grouped(returns_B, group_size)
  others = (r_GxS.sum(1, keepdims=True) - r_GxS) / (group_size - 1)
  return (r_GxS - others).reshape(-1)


def reinforce_pp(returns_B: Array, group_size: int, baseline: bool = True, eps: float = 1e-6) -> Array:
  """REINFORCE++ (Hu 2025): A = (a - mean_batch a) / (std_batch a + eps), normalised over the whole batch.

  With `baseline=True` (the "REINFORCE++-baseline" variant) a_i = r_i - mean_group r,
  else a_i = r_i. Here the batch statistics are over episodes; OpenRLHF takes them over
  tokens and folds a token-level KL penalty into the reward first (see
  losses.kl_penalty_rewards for that penalty).
  """
  r_GxS = _grouped(returns_B, group_size)
  a_B = (r_GxS - r_GxS.mean(1, keepdims=True) if baseline else r_GxS).reshape(-1)
  return (a_B - a_B.mean()) / (a_B.std() + eps)


def gae(rewards_BxT: Array, values_BxT: Array, mask_BxT: Array, gamma: float, lam: float) -> tuple[Array, Array]:
  """GAE (Schulman et al. 2016) over the masked steps of each row; returns (adv_BxT, returns_BxT).

  delta_t = r_t + gamma V_{t'} - V_t,  A_t = delta_t + gamma lam A_{t'},  R_t = A_t + V_t,
  where t' is the next masked slot of the row (slots with mask off are skipped, and
  their rewards ignored); after the row's last masked slot V_{t'} = A_{t'} = 0 (no
  bootstrap). Both outputs are zero where mask is off.
  """
  chex.assert_rank(rewards_BxT, 2)
  chex.assert_equal_shape([rewards_BxT, values_BxT, mask_BxT])
  f32 = lambda x: x.astype(jnp.float32).T

  def step(carry, x):
    next_value_B, next_adv_B = carry
    r_B, v_B, m_B = x
    adv_B = r_B + gamma * next_value_B - v_B + gamma * lam * next_adv_B
    return (jnp.where(m_B, v_B, next_value_B), jnp.where(m_B, adv_B, next_adv_B)), jnp.where(m_B, adv_B, 0.0)

  zeros_B = jnp.zeros(rewards_BxT.shape[:1], jnp.float32)
  _, adv_TxB = jax.lax.scan(step, (zeros_B, zeros_B), (f32(rewards_BxT), f32(values_BxT), mask_BxT.T), reverse=True)
  adv_BxT = adv_TxB.T
  return adv_BxT, jnp.where(mask_BxT, adv_BxT + values_BxT, 0.0)


def gae_turns(rewards_BxN: Array, values_BxN: Array, live_BxN: Array, gamma: float, lam: float):
  """GAE over turns: `gae` with the N turns as steps and `live_BxN` as the mask."""
  return gae(rewards_BxN, values_BxN, live_BxN, gamma, lam)


def discounted_returns(rewards_BxN: Array, live_BxN: Array, gamma: float) -> Array:
  """Return-to-go G_t = sum_{k >= t, live} gamma^(k - t) r_k (zero where not live)."""
  return gae(rewards_BxN, jnp.zeros_like(rewards_BxN, jnp.float32), live_BxN, gamma, 1.0)[0]


def gigpo(turn_rewards_BxN: Array, live_BxN: Array, state_keys_BxN: Array, group_size: int,
          gamma: float = 0.95, step_weight: float = 1.0, eps: float = 1e-6, scale: bool = True) -> Array:
  """GiGPO (Feng et al. 2025, "Group-in-Group Policy Optimization for LLM Agent Training"), per turn [B, N].

  A_{i,t} = A^E_i + step_weight * A^S_{i,t}, where A^E = grpo(sum_t r_{i,t}) is the
  episode-level advantage and A^S the step-level one: live turns of the same task group
  whose `state_keys` are equal (the same observation, in any sample and at any turn)
  form a step group; A^S = (G_{i,t} - mean_step_group G) / (std_step_group G + eps) of
  the discounted return-to-go G (no division with scale=False), 0 for singleton groups.
  """
  chex.assert_rank(turn_rewards_BxN, 2)
  chex.assert_equal_shape([turn_rewards_BxN, live_BxN, state_keys_BxN])
  B, N = turn_rewards_BxN.shape
  _check_groups(B, group_size)
  episode_B = grpo(jnp.where(live_BxN, turn_rewards_BxN, 0.0).sum(1), group_size, eps, scale)
  rtg_BxN = discounted_returns(turn_rewards_BxN, live_BxN, gamma)
  per_group = lambda x: x.reshape(B // group_size, group_size * N)  # M = G*N turns per task group
  rtg, live, keys = per_group(rtg_BxN), per_group(live_BxN), per_group(state_keys_BxN)
  same_xMxM = (keys[:, :, None] == keys[:, None, :]) & live[:, :, None] & live[:, None, :]
  count = same_xMxM.sum(-1)
  mean = jnp.where(same_xMxM, rtg[:, None, :], 0.0).sum(-1) / jnp.maximum(count, 1)
  step = rtg - mean
  if scale:
    var = jnp.where(same_xMxM, (rtg[:, None, :] - mean[:, :, None]) ** 2, 0.0).sum(-1) / jnp.maximum(count, 1)
    step = step / (jnp.sqrt(var) + eps)
  step_BxN = jnp.where(count > 1, step, 0.0).reshape(B, N)
  return jnp.where(live_BxN, episode_B[:, None] + step_weight * step_BxN, 0.0)


def turn_rloo(turn_rewards_BxN: Array, live_BxN: Array, group_size: int, gamma: float = 1.0) -> Array:
  """Turn-level leave-one-out advantage [B, N] for multi-turn credit (RLOO, Ahmadian et al. 2024, per turn).

  A_{i,t} = G_{i,t} - mean_{j != i, live_{j,t}} G_{j,t}, with G the discounted
  return-to-go: each turn is compared with the other samples of its task at the same
  turn index. 0 where the turn is not live or no other sample is live at that turn.
  """
  chex.assert_rank(turn_rewards_BxN, 2)
  chex.assert_equal_shape([turn_rewards_BxN, live_BxN])
  B, N = turn_rewards_BxN.shape
  _check_groups(B, group_size)
  rtg = discounted_returns(turn_rewards_BxN, live_BxN, gamma).reshape(-1, group_size, N)
  live = live_BxN.reshape(-1, group_size, N)
  others = live.sum(1, keepdims=True) - live
  others_mean = (rtg.sum(1, keepdims=True) - rtg) / jnp.maximum(others, 1)
  return jnp.where(live & (others > 0), rtg - others_mean, 0.0).reshape(B, N)


def whiten(adv_BxT: Array, mask_BxT: Array, eps: float = 1e-6) -> Array:
  """Advantages shifted and scaled to mean 0 and std 1 over the masked tokens (PPO's batch
  normalisation), 0 elsewhere."""
  mean = masked_mean(adv_BxT, mask_BxT)
  std = jnp.sqrt(masked_mean((adv_BxT - mean) ** 2, mask_BxT))
  return jnp.where(mask_BxT, (adv_BxT - mean) / (std + eps), 0.0)


def group_stats(returns_B: Array, group_size: int) -> dict:
  """Zero-variance groups for dynamic sampling (DAPO, Yu et al. 2025).

  `zero_variance_B` marks rows whose group's returns are all equal (they carry no
  group-relative signal); filter them with `loss_mask & ~zero_variance_B[:, None]` and
  report `zero_variance_fraction` (of rows, equal to the fraction of groups).
  """
  r_GxS = _grouped(returns_B, group_size)
  zero_G = r_GxS.max(1) == r_GxS.min(1)
  zero_B = jnp.repeat(zero_G, group_size)
  return dict(zero_variance_B=zero_B, zero_variance_fraction=zero_B.mean())


# ---- Trajectory adapters ------------------------------------------------------------------------


def episode_returns(traj: Trajectory) -> Array:
  """[B] undiscounted episode return: the sum of the live turns' rewards."""
  return jnp.where(traj.turn_live, traj.turn_reward, 0.0).sum(1)


def _per_episode(x_B: Array, traj: Trajectory) -> Array:
  return jnp.where(traj.loss_mask, x_B[:, None], 0.0)


def _per_turn(x_BxN: Array, traj: Trajectory) -> Array:
  """Each policy token gets its turn's value (slots with `turn == n` and loss_mask)."""
  turn_BxT = jnp.clip(traj.turn, 0, x_BxN.shape[1] - 1)
  return jnp.where(traj.loss_mask, jnp.take_along_axis(x_BxN, turn_BxT, axis=1), 0.0)


def _mix32(h: Array) -> Array:
  """MurmurHash3's 32-bit finaliser (uint32 -> uint32)."""
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def turn_state_keys(traj: Trajectory) -> Array:
  """[B, N] int32 hash of the observation each turn saw (GiGPO's anchor states).

  Turn 0 saw the PROMPT slots (instructions + first observation); turn n > 0 saw the
  FEEDBACK slots written at the end of turn n-1 (they carry `turn = n-1`). The key
  hashes the observation's valid tokens in order and its length, so equal
  observations get equal keys whatever their slot positions; collisions of different
  observations are ~2^-32 per pair.
  """
  B, N = traj.turn_reward.shape
  obs_turn_BxT = jnp.where(traj.segment == int(Segment.PROMPT), 0,
                           jnp.where(traj.segment == int(Segment.FEEDBACK), traj.turn + 1, -1))
  in_obs_BxTxN = traj.valid[..., None] & (obs_turn_BxT[..., None] == jnp.arange(N))
  rank_BxT = jnp.where(in_obs_BxTxN, jnp.cumsum(in_obs_BxTxN, axis=1), 0).sum(-1).astype(jnp.uint32)
  token_BxT = _mix32(traj.tokens.astype(jnp.uint32) * jnp.uint32(0x9E3779B1) + rank_BxT * jnp.uint32(0x27D4EB2F))
  sum_BxN = jnp.where(in_obs_BxTxN, token_BxT[..., None], jnp.uint32(0)).sum(1, dtype=jnp.uint32)
  length_BxN = in_obs_BxTxN.sum(1, dtype=jnp.uint32)
  return jax.lax.bitcast_convert_type(_mix32(sum_BxN ^ _mix32(length_BxN + jnp.uint32(1))), jnp.int32)


def _episode_estimator(name: str, core):
  def estimator(traj: Trajectory, *, group_size: int, values_BxT=None, **hparams) -> Estimate:
    returns_B = episode_returns(traj)
    return Estimate(_per_episode(core(returns_B, group_size, **hparams), traj), _per_episode(returns_B, traj))
  estimator.__name__ = estimator.__qualname__ = f"{name}_estimator"
  estimator.__doc__ = (f"`{name}` of the episode returns on every policy token of the row; "
                       f"hparams go to advantages.{name}. returns_BxT: the episode return.")
  return register_advantage(name)(estimator)


grpo_estimator = _episode_estimator("grpo", grpo)
dr_grpo_estimator = _episode_estimator("dr_grpo", dr_grpo)
rloo_estimator = _episode_estimator("rloo", rloo)
reinforce_pp_estimator = _episode_estimator("reinforce_pp", reinforce_pp)


@register_advantage("gae")
def gae_estimator(traj: Trajectory, *, group_size: int, values_BxT: Array | None = None,
                  gamma: float = 1.0, lam: float = 1.0) -> Estimate:
  """Token-level `gae` over the policy tokens with `traj.reward` and the critic's values (needs values_BxT)."""
  if values_BxT is None:
    raise ValueError("the 'gae' estimator needs values_BxT from a critic")
  return Estimate(*gae(traj.reward, values_BxT, traj.loss_mask, gamma, lam))


@register_advantage("gae_turns")
def gae_turns_estimator(traj: Trajectory, *, group_size: int, values_BxT: Array | None = None,
                        gamma: float = 1.0, lam: float = 0.95) -> Estimate:
  """Turn-level `gae_turns`; a turn's value is values_BxT at its first policy token (needs values_BxT).

  Every policy token of turn n gets A_n; returns_BxT is the turn's lambda-return.
  """
  if values_BxT is None:
    raise ValueError("the 'gae_turns' estimator needs values_BxT from a critic")
  B, N = traj.turn_reward.shape
  T = traj.loss_mask.shape[1]
  slot_BxT = jnp.where(traj.loss_mask, jnp.arange(T), T)
  first_BxN = jnp.full((B, N), T).at[jnp.arange(B)[:, None], jnp.clip(traj.turn, 0, N - 1)].min(slot_BxT)
  values_BxN = jnp.where(first_BxN < T, jnp.take_along_axis(values_BxT, jnp.minimum(first_BxN, T - 1), 1), 0.0)
  adv_BxN, returns_BxN = gae_turns(traj.turn_reward, values_BxN, traj.turn_live, gamma, lam)
  return Estimate(_per_turn(adv_BxN, traj), _per_turn(returns_BxN, traj))


@register_advantage("gigpo")
def gigpo_estimator(traj: Trajectory, *, group_size: int, values_BxT=None, gamma: float = 0.95,
                    step_weight: float = 1.0, eps: float = 1e-6, scale: bool = True) -> Estimate:
  """`gigpo` per turn with state keys from `turn_state_keys`; returns_BxT: the turn's return-to-go."""
  adv_BxN = gigpo(traj.turn_reward, traj.turn_live, turn_state_keys(traj), group_size, gamma, step_weight, eps, scale)
  rtg_BxN = discounted_returns(traj.turn_reward, traj.turn_live, gamma)
  return Estimate(_per_turn(adv_BxN, traj), _per_turn(rtg_BxN, traj))


@register_advantage("turn_rloo")
def turn_rloo_estimator(traj: Trajectory, *, group_size: int, values_BxT=None, gamma: float = 1.0) -> Estimate:
  """`turn_rloo` per turn; returns_BxT: the turn's discounted return-to-go."""
  adv_BxN = turn_rloo(traj.turn_reward, traj.turn_live, group_size, gamma)
  rtg_BxN = discounted_returns(traj.turn_reward, traj.turn_live, gamma)
  return Estimate(_per_turn(adv_BxN, traj), _per_turn(rtg_BxN, traj))
