"""Losses: policy (PPO-clip, GSPO), KL estimators, entropy, value, Bradley-Terry and DPO.

Log-probs are of the sampled tokens, [B, T]; `mask_BxT` marks the tokens that count
(the Trajectory's loss_mask, with filtered rows zeroed). Every loss is a scalar to
minimise, returned with a dict of scalar metrics: `(loss, metrics)`.

Aggregation modes (registered by name; `agg(loss_BxT, mask_BxT, norm_len=None)`):
  token_mean               sum over the batch's masked tokens / their number (default)
  seq_mean_token_mean      mean over rows of each row's masked-token mean
  seq_mean_token_sum       mean over rows of each row's masked-token sum
  seq_mean_token_sum_norm  mean over rows of each row's masked-token sum / norm_len, a constant
                           (default T) so the loss does not depend on lengths (Dr. GRPO, Liu et al. 2025)
The seq_* modes average over rows with at least one masked token.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jarl.algos.registry import get_aggregation, get_kl, register_aggregation, register_kl, register_policy_loss

Array = jax.Array


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
  """Mean of x over the entries where mask is on (0 if there are none)."""
  return jnp.where(mask, x, 0.0).sum(axis) / jnp.maximum(mask.sum(axis), 1)


@register_aggregation("token_mean")
def token_mean(loss_BxT: Array, mask_BxT: Array, norm_len: int | None = None) -> Array:
  chex.assert_rank(loss_BxT, 2)
  chex.assert_equal_shape([loss_BxT, mask_BxT])
  return masked_mean(loss_BxT, mask_BxT)


def _seq_mean(per_row_B: Array, mask_BxT: Array) -> Array:
  return masked_mean(per_row_B, mask_BxT.any(1))


@register_aggregation("seq_mean_token_mean")
def seq_mean_token_mean(loss_BxT: Array, mask_BxT: Array, norm_len: int | None = None) -> Array:
  chex.assert_rank(loss_BxT, 2)
  chex.assert_equal_shape([loss_BxT, mask_BxT])
  return _seq_mean(masked_mean(loss_BxT, mask_BxT, axis=1), mask_BxT)


@register_aggregation("seq_mean_token_sum")
def seq_mean_token_sum(loss_BxT: Array, mask_BxT: Array, norm_len: int | None = None) -> Array:
  chex.assert_rank(loss_BxT, 2)
  chex.assert_equal_shape([loss_BxT, mask_BxT])
  return _seq_mean(jnp.where(mask_BxT, loss_BxT, 0.0).sum(1), mask_BxT)


@register_aggregation("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(loss_BxT: Array, mask_BxT: Array, norm_len: int | None = None) -> Array:
  return seq_mean_token_sum(loss_BxT, mask_BxT) / (norm_len or loss_BxT.shape[1])


def _check_policy_inputs(*arrays_BxT):
  chex.assert_rank(arrays_BxT[0], 2)
  chex.assert_equal_shape(arrays_BxT)


def _ratio_metrics(log_ratio_BxT: Array, clipped_BxT: Array, mask_BxT: Array) -> dict:
  """clip_fraction, approx_kl (k3 of old vs new: r - 1 - log r, r = new / old), ratio_mean over masked tokens."""
  log_ratio_BxT, ratio_BxT = jax.lax.stop_gradient((log_ratio_BxT, jnp.exp(log_ratio_BxT)))
  return dict(clip_fraction=masked_mean(clipped_BxT, mask_BxT),
              approx_kl=masked_mean(ratio_BxT - 1.0 - log_ratio_BxT, mask_BxT),
              ratio_mean=masked_mean(ratio_BxT, mask_BxT))


@register_policy_loss("ppo_clip")
def ppo_clip(logp_BxT: Array, old_logp_BxT: Array, adv_BxT: Array, mask_BxT: Array, clip_low: float = 0.2,
             clip_high: float = 0.2, dual_clip: float | None = None, agg: str = "token_mean",
             norm_len: int | None = None) -> tuple[Array, dict]:
  """PPO-clip (Schulman et al. 2017) with clip-higher (DAPO, Yu et al. 2025) and dual clip (Ye et al. 2020).

  r = exp(logp - old_logp);  l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high));
  for A < 0 with dual_clip = c > 1: l = min(l, -c A). Aggregated over mask by `agg`.
  Metrics: clip_fraction (tokens where the clipped term is active), approx_kl, ratio_mean,
  and dual_clip_fraction when dual_clip is set.
  """
  _check_policy_inputs(logp_BxT, old_logp_BxT, adv_BxT, mask_BxT)
  log_ratio_BxT = logp_BxT - old_logp_BxT
  ratio_BxT = jnp.exp(log_ratio_BxT)
  unclipped_BxT = -adv_BxT * ratio_BxT
  clipped_BxT = -adv_BxT * jnp.clip(ratio_BxT, 1.0 - clip_low, 1.0 + clip_high)
  loss_BxT = jnp.maximum(unclipped_BxT, clipped_BxT)
  metrics = _ratio_metrics(log_ratio_BxT, clipped_BxT > unclipped_BxT, mask_BxT)
  if dual_clip is not None:
    if dual_clip <= 1.0:
      raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    dual_BxT = (adv_BxT < 0) & (loss_BxT > -dual_clip * adv_BxT)
    loss_BxT = jnp.where(dual_BxT, -dual_clip * adv_BxT, loss_BxT)
    metrics["dual_clip_fraction"] = masked_mean(dual_BxT, mask_BxT)
  return get_aggregation(agg)(loss_BxT, mask_BxT, norm_len), metrics


@register_policy_loss("gspo")
def gspo(logp_BxT: Array, old_logp_BxT: Array, adv_BxT: Array, mask_BxT: Array, clip_low: float = 3e-4,
         clip_high: float = 4e-4, agg: str = "seq_mean_token_mean", norm_len: int | None = None) -> tuple[Array, dict]:
  """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"), in its GSPO-token form.

  s_i = exp(1/|y_i| sum_t (logp_t - old_logp_t)) over the row's masked tokens is the
  sequence ratio; each token uses s_{i,t} = sg[s_i] * exp(logp_t - sg[logp_t]) (equal
  to s_i in value) in l = max(-A s, -A clip(s, 1 - clip_low, 1 + clip_high)). With the
  same advantage on every token of a row and seq_mean_token_mean this is sequence-level
  GSPO exactly, gradient included. Metrics as ppo_clip (ratio_mean over tokens: s_i
  weighted by length).
  """
  _check_policy_inputs(logp_BxT, old_logp_BxT, adv_BxT, mask_BxT)
  seq_log_ratio_B = masked_mean(logp_BxT - old_logp_BxT, mask_BxT, axis=1)
  log_ratio_BxT = jax.lax.stop_gradient(seq_log_ratio_B)[:, None] + logp_BxT - jax.lax.stop_gradient(logp_BxT)
  ratio_BxT = jnp.exp(log_ratio_BxT)
  unclipped_BxT = -adv_BxT * ratio_BxT
  clipped_BxT = -adv_BxT * jnp.clip(ratio_BxT, 1.0 - clip_low, 1.0 + clip_high)
  loss_BxT = jnp.maximum(unclipped_BxT, clipped_BxT)
  metrics = _ratio_metrics(log_ratio_BxT, clipped_BxT > unclipped_BxT, mask_BxT)
  return get_aggregation(agg)(loss_BxT, mask_BxT, norm_len), metrics


@jax.custom_vjp
def token_logprob_entropy(logits_BxTxV: Array, tokens_BxT: Array) -> tuple[Array, Array]:
  """(log softmax(logits)[token], entropy of softmax(logits)), each [B, T], in float32.

  Fused for large vocabularies: the forward reads the logits twice (max, then one pass
  that sums exp(l - max) and exp(l - max) (l - max)), and the backward reads them once
  and writes the gradient, instead of materialising log_softmax, its exp and their
  products (four more passes over [B, T, V] on a 32k vocabulary). With Z = sum e^(l-m)
  and S = sum e^(l-m) (l-m): lse = m + log Z, H = log Z - S / Z; the gradients are
  dlogp/dl = onehot - p and dH/dl = -p (l - lse + H).
  """
  return _token_logprob_entropy_fwd(logits_BxTxV, tokens_BxT)[0]


def _token_logprob_entropy_fwd(logits_BxTxV, tokens_BxT):
  chex.assert_rank(logits_BxTxV, 3)
  chex.assert_equal_shape_prefix([logits_BxTxV, tokens_BxT], 2)
  raw_logits_BxTxV, logits_BxTxV = logits_BxTxV, logits_BxTxV.astype(jnp.float32)
  max_BxT = jax.lax.stop_gradient(logits_BxTxV.max(-1))
  shifted_BxTxV = logits_BxTxV - max_BxT[..., None]
  exp_BxTxV = jnp.exp(shifted_BxTxV)
  z_BxT, s_BxT = exp_BxTxV.sum(-1), (exp_BxTxV * shifted_BxTxV).sum(-1)
  log_z_BxT = jnp.log(z_BxT)
  lse_BxT = max_BxT + log_z_BxT
  entropy_BxT = log_z_BxT - s_BxT / z_BxT
  logp_BxT = jnp.take_along_axis(logits_BxTxV, tokens_BxT[..., None], axis=-1)[..., 0] - lse_BxT
  return (logp_BxT, entropy_BxT), (raw_logits_BxTxV, tokens_BxT, lse_BxT, entropy_BxT)


def _token_logprob_entropy_bwd(residuals, grads):
  logits_BxTxV, tokens_BxT, lse_BxT, entropy_BxT = residuals
  g_logp_BxT, g_entropy_BxT = grads
  logp_BxTxV = logits_BxTxV.astype(jnp.float32) - lse_BxT[..., None]
  p_BxTxV = jnp.exp(logp_BxTxV)
  onehot_BxTxV = jnp.arange(logits_BxTxV.shape[-1]) == tokens_BxT[..., None]
  d_BxTxV = (g_logp_BxT[..., None] * (onehot_BxTxV - p_BxTxV)
             - g_entropy_BxT[..., None] * p_BxTxV * (logp_BxTxV + entropy_BxT[..., None]))
  return d_BxTxV.astype(logits_BxTxV.dtype), None


token_logprob_entropy.defvjp(_token_logprob_entropy_fwd, _token_logprob_entropy_bwd)


# KL to a reference policy from the sampled tokens' log-probs (Schulman 2020, "Approximating KL
# divergence"): with samples from the policy and d = ref_logp - logp, each estimates KL(policy || ref);
# k1 is unbiased but high-variance and can be negative, k2 is biased and low-variance, k3 is unbiased,
# low-variance and >= 0.


@register_kl("k1")
def kl_k1(logp_BxT: Array, ref_logp_BxT: Array) -> Array:
  """k1 = logp - ref_logp."""
  chex.assert_equal_shape([logp_BxT, ref_logp_BxT])
  return logp_BxT - ref_logp_BxT


@register_kl("k2")
def kl_k2(logp_BxT: Array, ref_logp_BxT: Array) -> Array:
  """k2 = 0.5 (logp - ref_logp)^2."""
  chex.assert_equal_shape([logp_BxT, ref_logp_BxT])
  return 0.5 * (logp_BxT - ref_logp_BxT) ** 2


@register_kl("k3")
def kl_k3(logp_BxT: Array, ref_logp_BxT: Array) -> Array:
  """k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1."""
  chex.assert_equal_shape([logp_BxT, ref_logp_BxT])
  d_BxT = ref_logp_BxT - logp_BxT
  return jnp.expm1(d_BxT) - d_BxT


def kl_loss(logp_BxT: Array, ref_logp_BxT: Array, mask_BxT: Array, estimator: str = "k3",
            agg: str = "token_mean", norm_len: int | None = None) -> Array:
  """KL to the reference as a loss term: the per-token estimate aggregated over mask."""
  chex.assert_equal_shape([logp_BxT, ref_logp_BxT, mask_BxT])
  return get_aggregation(agg)(get_kl(estimator)(logp_BxT, ref_logp_BxT), mask_BxT, norm_len)


def kl_penalty_rewards(reward_BxT: Array, logp_BxT: Array, ref_logp_BxT: Array, mask_BxT: Array,
                       coef: float, estimator: str = "k1") -> Array:
  """KL as a reward penalty: r'_t = r_t - coef * kl_t at each policy token (a constant, no gradient)."""
  chex.assert_equal_shape([reward_BxT, logp_BxT, ref_logp_BxT, mask_BxT])
  kl_BxT = jax.lax.stop_gradient(get_kl(estimator)(logp_BxT, ref_logp_BxT))
  return reward_BxT - jnp.where(mask_BxT, coef * kl_BxT, 0.0)


def value_loss(values_BxT: Array, old_values_BxT: Array, returns_BxT: Array, mask_BxT: Array,
               clip: float | None = 0.2) -> tuple[Array, dict]:
  """Clipped value loss (PPO2, as in OpenAI baselines): token mean over mask of

  0.5 * max((V - R)^2, (V_old + clip(V - V_old, -clip, clip) - R)^2); clip=None: 0.5 (V - R)^2.
  Metrics: value_clip_fraction (tokens where the clipped error is the larger).
  """
  chex.assert_rank(values_BxT, 2)
  chex.assert_equal_shape([values_BxT, old_values_BxT, returns_BxT, mask_BxT])
  err_BxT = (values_BxT - returns_BxT) ** 2
  if clip is None:
    return 0.5 * masked_mean(err_BxT, mask_BxT), dict(value_clip_fraction=jnp.zeros(()))
  clipped_BxT = old_values_BxT + jnp.clip(values_BxT - old_values_BxT, -clip, clip)
  clipped_err_BxT = (clipped_BxT - returns_BxT) ** 2
  loss = 0.5 * masked_mean(jnp.maximum(err_BxT, clipped_err_BxT), mask_BxT)
  return loss, dict(value_clip_fraction=masked_mean(clipped_err_BxT > err_BxT, mask_BxT))


def bradley_terry(chosen_B: Array, rejected_B: Array) -> tuple[Array, dict]:
  """Bradley-Terry reward-model loss: mean -log sigmoid(s_chosen - s_rejected).

  Metrics: accuracy (chosen scored strictly higher), margin (mean score difference).
  """
  chex.assert_rank(chosen_B, 1)
  chex.assert_equal_shape([chosen_B, rejected_B])
  margin_B = chosen_B - rejected_B
  return -jax.nn.log_sigmoid(margin_B).mean(), dict(accuracy=(margin_B > 0).mean(), margin=margin_B.mean())


def dpo(policy_chosen_logp_B: Array, policy_rejected_logp_B: Array, ref_chosen_logp_B: Array,
        ref_rejected_logp_B: Array, beta: float = 0.1) -> tuple[Array, dict]:
  """DPO (Rafailov et al. 2023): mean -log sigmoid(beta [(pi_c - ref_c) - (pi_r - ref_r)]).

  Inputs are sequence log-probs. Metrics: the implicit rewards beta (pi - ref) of chosen
  and rejected (means), their margin, and accuracy (chosen reward strictly higher).
  """
  chex.assert_rank(policy_chosen_logp_B, 1)
  chex.assert_equal_shape([policy_chosen_logp_B, policy_rejected_logp_B, ref_chosen_logp_B, ref_rejected_logp_B])
  chosen_B = beta * (policy_chosen_logp_B - ref_chosen_logp_B)
  rejected_B = beta * (policy_rejected_logp_B - ref_rejected_logp_B)
  margin_B = chosen_B - rejected_B
  metrics = dict(chosen_reward=chosen_B.mean(), rejected_reward=rejected_B.mean(), margin=margin_B.mean(),
                 accuracy=(margin_B > 0).mean())
  return -jax.nn.log_sigmoid(margin_B).mean(), metrics
