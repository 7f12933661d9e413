"""Losses against slow, obvious numpy references; gradients of the clipped objectives; the registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl.algos import losses as L
from jarl.algos import get_aggregation, get_kl, get_policy_loss, registered


def _rng(*seed):
  return np.random.default_rng(seed)


def _close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _both(fn, *args, **static):
  eager = fn(*args, **static)
  jax.tree.map(_close, eager, jax.jit(functools.partial(fn, **static))(*args))
  return eager


def _policy_batch(B, T, seed, spread=0.3):
  rng = _rng(B, T, seed)
  old = -rng.random((B, T)).astype(np.float32) * 3
  logp = (old + rng.normal(size=(B, T)) * spread).astype(np.float32)
  adv = rng.normal(size=(B, T)).astype(np.float32)
  mask = rng.random((B, T)) < 0.7
  mask[-1] = False  # a filtered row
  mask[0, 0] = True
  return logp, old, adv, mask


def ref_agg(loss, mask, mode, norm_len=None):
  rows = [[loss[b, t] for t in range(loss.shape[1]) if mask[b, t]] for b in range(loss.shape[0])]
  rows = [row for row in rows if row]
  if mode == "token_mean":
    return sum(sum(row) for row in rows) / sum(len(row) for row in rows)
  per_row = {"seq_mean_token_mean": lambda row: sum(row) / len(row), "seq_mean_token_sum": sum,
             "seq_mean_token_sum_norm": lambda row: sum(row) / (norm_len or loss.shape[1])}[mode]
  return np.mean([per_row(row) for row in rows])


def ref_ppo_tokens(logp, old, adv, cl, ch, dual=None):
  loss, clipped = np.zeros(logp.shape), np.zeros(logp.shape, bool)
  for b, t in np.ndindex(logp.shape):
    r, a = np.exp(logp[b, t] - old[b, t]), adv[b, t]
    loss[b, t] = max(-a * r, -a * min(max(r, 1 - cl), 1 + ch))
    clipped[b, t] = -a * min(max(r, 1 - cl), 1 + ch) > -a * r
    if dual is not None and a < 0:
      loss[b, t] = min(loss[b, t], -dual * a)
  return loss, clipped


AGGS = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]


@pytest.mark.parametrize("mode", AGGS)
def test_aggregations_match_reference(mode):
  loss, _, _, mask = _policy_batch(4, 7, 0)
  _close(_both(get_aggregation(mode), loss, mask), ref_agg(loss, mask, mode))
  if mode == "seq_mean_token_sum_norm":
    _close(get_aggregation(mode)(loss, mask, 32), ref_agg(loss, mask, mode, 32))
  with pytest.raises(AssertionError):
    get_aggregation(mode)(loss, mask[:, :-1])


@pytest.mark.parametrize("B,T,cl,ch,dual,agg", [(3, 5, 0.2, 0.2, None, "token_mean"),
                                                (6, 11, 0.2, 0.28, 3.0, "seq_mean_token_mean"),
                                                (2, 4, 0.1, 0.3, 2.0, "seq_mean_token_sum_norm")])
def test_ppo_clip_matches_reference(B, T, cl, ch, dual, agg):
  logp, old, adv, mask = _policy_batch(B, T, 1, spread=0.4)
  loss, metrics = _both(L.ppo_clip, logp, old, adv, mask, clip_low=cl, clip_high=ch, dual_clip=dual, agg=agg)
  ref_loss, ref_clipped = ref_ppo_tokens(logp, old, adv, cl, ch, dual)
  _close(loss, ref_agg(ref_loss, mask, agg))
  log_r = (logp - old)[mask]
  _close(metrics["clip_fraction"], ref_clipped[mask].mean())
  _close(metrics["approx_kl"], np.mean(np.exp(log_r) - 1 - log_r))
  _close(metrics["ratio_mean"], np.exp(log_r).mean())
  assert ("dual_clip_fraction" in metrics) == (dual is not None)
  assert 0 < float(metrics["clip_fraction"]) < 1


def test_ppo_clip_gradient_is_zero_on_clipped_tokens():
  logp, old, adv, mask = _policy_batch(4, 9, 2, spread=0.5)
  grad = np.asarray(jax.jit(jax.grad(lambda lp: L.ppo_clip(lp, old, adv, mask, 0.2, 0.28)[0]))(logp))
  _, clipped = ref_ppo_tokens(logp, old, adv, 0.2, 0.28)
  ratio = np.exp(logp - old)
  assert clipped[mask].any() and (~clipped[mask]).any()
  expected = np.where(mask & ~clipped, -adv * ratio / mask.sum(), 0.0)
  _close(grad, expected, 1e-6)
  # dual clip: a negative-advantage token with a huge ratio has a bounded loss and zero gradient
  lp, old1, a1, m1 = np.array([[3.0]], np.float32), np.zeros((1, 1), np.float32), -np.ones((1, 1), np.float32), \
      np.ones((1, 1), bool)
  loss, metrics = L.ppo_clip(lp, old1, a1, m1, dual_clip=3.0)
  _close(loss, 3.0)
  _close(metrics["dual_clip_fraction"], 1.0)
  _close(jax.grad(lambda x: L.ppo_clip(x, old1, a1, m1, dual_clip=3.0)[0])(lp), 0.0)
  with pytest.raises(ValueError, match="dual_clip must be > 1"):
    L.ppo_clip(lp, old1, a1, m1, dual_clip=0.5)


def _gspo_sequence_loss(logp, old, adv_B, mask, cl, ch):
  """Sequence-level GSPO written directly: mean_i max(-A_i s_i, -A_i clip(s_i)), s_i the length-normalised ratio."""
  rows = mask.any(1)
  s = jnp.exp(jnp.where(mask, logp - old, 0).sum(1) / jnp.maximum(mask.sum(1), 1))
  per_row = jnp.maximum(-adv_B * s, -adv_B * jnp.clip(s, 1 - cl, 1 + ch))
  return jnp.where(rows, per_row, 0).sum() / rows.sum()


@pytest.mark.parametrize("cl,ch", [(3e-4, 4e-4), (0.05, 0.08)])
def test_gspo_equals_sequence_level_gspo_with_gradient(cl, ch):
  logp, old, _, mask = _policy_batch(6, 8, 3, spread=0.05)
  adv_B = _rng(9).normal(size=6).astype(np.float32)
  adv = np.repeat(adv_B[:, None], 8, 1)
  loss, metrics = _both(L.gspo, logp, old, adv, mask, clip_low=cl, clip_high=ch)
  _close(loss, _gspo_sequence_loss(logp, old, adv_B, mask, cl, ch))
  clip_fraction = float(metrics["clip_fraction"])  # the paper's ranges clip some rows; the wide ones none
  assert 0 < clip_fraction < 1 if cl < 1e-3 else clip_fraction == 0
  grad = jax.jit(jax.grad(lambda lp: L.gspo(lp, old, adv, mask, cl, ch)[0]))(logp)
  ref_grad = jax.jit(jax.grad(lambda lp: _gspo_sequence_loss(lp, old, adv_B, mask, cl, ch)))(logp)
  _close(grad, ref_grad, 1e-6)
  s_B = np.exp([(logp - old)[b][mask[b]].mean() if mask[b].any() else 0 for b in range(6)])
  _close(metrics["ratio_mean"], np.repeat(s_B, mask.sum(1)).mean())


def _naive_logprob_entropy(logits, tokens):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0], -(jnp.exp(logp) * logp).sum(-1)


def test_token_logprob_entropy_is_stable_and_exact():
  logits = _rng(4).normal(size=(2, 3, 11)).astype(np.float32) * np.array([1.0, 50.0, 1e4], np.float32)[:, None]
  tokens = _rng(7).integers(0, 11, size=(2, 3))
  p = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ref_entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(-1)
  ref_logp = np.log(np.take_along_axis(p, tokens[..., None], -1)[..., 0] + 1e-300)
  logp, entropy = _both(L.token_logprob_entropy, logits, tokens)
  assert np.isfinite(entropy).all()
  _close(entropy, ref_entropy, 1e-4)
  finite = ref_logp > -50  # a token 1e4 below the max has log-prob -1e4-ish; compare where float64 can
  _close(np.asarray(logp)[finite], ref_logp[finite], 1e-4)
  with pytest.raises(AssertionError):
    L.token_logprob_entropy(logits[0], tokens[0])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_token_logprob_entropy_gradient_matches_autodiff(dtype):
  logits = jnp.asarray(_rng(8).normal(size=(3, 5, 37)) * 3, dtype)
  tokens = jnp.asarray(_rng(9).integers(0, 37, size=(3, 5)))
  w_logp, w_entropy = (jnp.asarray(_rng(s).normal(size=(3, 5)), jnp.float32) for s in (10, 11))

  def objective(fn):
    return lambda l: sum((w * x).sum() for w, x in zip((w_logp, w_entropy), fn(l, tokens)))

  got = jax.jit(jax.grad(objective(L.token_logprob_entropy)))(logits)
  want = jax.grad(objective(_naive_logprob_entropy))(logits)
  assert got.dtype == dtype
  _close(np.asarray(got, np.float32), np.asarray(want, np.float32), 1e-5 if dtype == jnp.float32 else 2e-2)
  _close(L.token_logprob_entropy(logits, tokens), _naive_logprob_entropy(logits, tokens), 1e-5)


def test_masked_mean():
  x, mask = _rng(5).normal(size=(3, 4)), _rng(6).random((3, 4)) < 0.5
  _close(L.masked_mean(x, mask), x[mask].mean())
  _close(L.masked_mean(x, np.zeros_like(mask)), 0.0)


def test_kl_estimators_and_penalty():
  logp, ref, _, mask = _policy_batch(3, 6, 4, spread=0.5)
  d = ref - logp
  expected = {"k1": -d, "k2": 0.5 * d ** 2, "k3": np.exp(d) - d - 1}
  for name, value in expected.items():
    _close(_both(get_kl(name), logp, ref), value)
  assert (np.asarray(L.kl_k3(logp, ref)) >= 0).all()
  _close(L.kl_loss(logp, ref, mask), expected["k3"][mask].mean())
  reward = _rng(7).normal(size=logp.shape).astype(np.float32)
  got = _both(L.kl_penalty_rewards, reward, logp, ref, mask, coef=0.1, estimator="k2")
  _close(got, np.where(mask, reward - 0.1 * expected["k2"], reward))
  with pytest.raises(AssertionError):
    L.kl_k1(logp, ref[:, :-1])


@pytest.mark.parametrize("clip", [0.2, None])
def test_value_loss_matches_reference(clip):
  rng = _rng(8)
  v, old, ret = rng.normal(size=(3, 4, 6)).astype(np.float32)
  mask = rng.random((4, 6)) < 0.6
  loss, metrics = _both(L.value_loss, v, old, ret, mask, clip=clip)
  per_token, clipped = [], []
  for b, t in zip(*np.nonzero(mask)):
    err = (v[b, t] - ret[b, t]) ** 2
    err_c = (old[b, t] + np.clip(v[b, t] - old[b, t], -clip, clip) - ret[b, t]) ** 2 if clip else err
    per_token.append(0.5 * max(err, err_c))
    clipped.append(err_c > err)
  _close(loss, np.mean(per_token))
  _close(metrics["value_clip_fraction"], np.mean(clipped))


def test_bradley_terry_and_dpo():
  rng = _rng(9)
  c, r, rc, rr = rng.normal(size=(4, 16)).astype(np.float32)
  loss, metrics = _both(L.bradley_terry, c, r)
  _close(loss, np.mean([np.log1p(np.exp(-(ci - ri))) for ci, ri in zip(c, r)]))
  _close(metrics["accuracy"], np.mean(c > r))
  loss, metrics = _both(L.dpo, c, r, rc, rr, beta=0.5)
  margin = 0.5 * ((c - rc) - (r - rr))
  _close(loss, np.mean(np.log1p(np.exp(-margin))))
  _close(metrics["accuracy"], np.mean(margin > 0))
  _close(metrics["chosen_reward"], np.mean(0.5 * (c - rc)))
  _close(metrics["margin"], margin.mean())
  with pytest.raises(AssertionError):
    L.dpo(c, r, rc, rr[:-1])


def test_registry_names_and_errors():
  assert registered()["policy loss"] == ["gspo", "ppo_clip"]
  assert registered()["KL estimator"] == ["k1", "k2", "k3"]
  assert registered()["loss aggregation"] == sorted(AGGS)
  with pytest.raises(ValueError, match=r"unknown policy loss 'ppo'; available: \['gspo', 'ppo_clip'\]"):
    get_policy_loss("ppo")
  with pytest.raises(ValueError, match=r"unknown KL estimator 'k4'; available: \['k1', 'k2', 'k3'\]"):
    get_kl("k4")
  with pytest.raises(ValueError, match=r"unknown loss aggregation 'sum'; available: \['seq_mean_token_mean'"):
    L.ppo_clip(*_policy_batch(2, 3, 0), agg="sum")
