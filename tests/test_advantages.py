"""Advantage estimators against slow, obvious numpy references; Trajectory adapters; the registry."""

import functools

import jax
import numpy as np
import pytest

from jarl.agent import Segment
from jarl.algos import advantages as A
from jarl.algos import get_advantage, register_advantage, registered
from jarl.types import Trajectory

SHAPES = [(4, 2), (6, 3), (8, 8), (5, 1)]  # (B, G)


def _rng(*seed):
  return np.random.default_rng(seed)


def _close(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def _both(fn, *args, **static):
  """fn(*args, **static) without and with jit (static kwargs closed over); checks they agree."""
  eager = fn(*args, **static)
  jitted = jax.jit(functools.partial(fn, **static))(*args)
  jax.tree.map(_close, eager, jitted)
  return eager


# ---- slow references ---------------------------------------------------------------------------


def ref_episode(name, r, G, eps=1e-6, scale=True, baseline=True):
  out = np.zeros(len(r))
  for g in range(0, len(r), G):
    grp = r[g:g + G]
    for i in range(G):
      others = [grp[j] for j in range(G) if j != i]
      if name == "grpo":
        out[g + i] = (grp[i] - np.mean(grp)) / ((np.std(grp) + eps) if scale else 1.0)
      elif name == "dr_grpo":
        out[g + i] = grp[i] - np.mean(grp)
      elif name == "rloo":
        out[g + i] = grp[i] - sum(others) / len(others)
      elif name == "reinforce_pp":
        out[g + i] = grp[i] - (np.mean(grp) if baseline else 0.0)
  if name == "reinforce_pp":
    out = (out - out.mean()) / (out.std() + eps)
  return out


def ref_gae(r, v, m, gamma, lam):
  adv, ret = np.zeros(r.shape), np.zeros(r.shape)
  for b in range(r.shape[0]):
    steps = [t for t in range(r.shape[1]) if m[b, t]]
    next_v = next_a = 0.0
    for t in reversed(steps):
      delta = r[b, t] + gamma * next_v - v[b, t]
      adv[b, t] = delta + gamma * lam * next_a
      ret[b, t] = adv[b, t] + v[b, t]
      next_v, next_a = v[b, t], adv[b, t]
  return adv, ret


def ref_rtg(r, live, gamma):
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    for n in range(r.shape[1]):
      if live[b, n]:
        out[b, n] = sum(gamma ** (k - n) * r[b, k] for k in range(n, r.shape[1]) if live[b, k])
  return out


def ref_gigpo(r, live, keys, G, gamma, w, eps=1e-6):
  B, N = r.shape
  episode = ref_episode("grpo", (r * live).sum(1), G)
  rtg = ref_rtg(r, live, gamma)
  out = np.zeros((B, N))
  for b in range(B):
    for n in range(N):
      if not live[b, n]:
        continue
      g0 = b // G * G
      peers = [rtg[c, k] for c in range(g0, g0 + G) for k in range(N) if live[c, k] and keys[c, k] == keys[b, n]]
      step = (rtg[b, n] - np.mean(peers)) / (np.std(peers) + eps) if len(peers) > 1 else 0.0
      out[b, n] = episode[b] + w * step
  return out


def ref_turn_rloo(r, live, G, gamma):
  rtg = ref_rtg(r, live, gamma)
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    for n in range(r.shape[1]):
      others = [rtg[c, n] for c in range(b // G * G, b // G * G + G) if c != b and live[c, n]]
      if live[b, n] and others:
        out[b, n] = rtg[b, n] - np.mean(others)
  return out


def _live(rng, B, N):
  """Turn masks as a rollout makes them: each row plays its first 1..N turns."""
  return np.arange(N)[None, :] < rng.integers(1, N + 1, size=(B, 1))


# ---- core math ---------------------------------------------------------------------------------


@pytest.mark.parametrize("B,G", SHAPES)
@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_episode_estimators_match_reference(name, B, G):
  if name == "rloo" and G == 1:
    with pytest.raises(ValueError, match="group_size >= 2"):
      A.rloo(np.zeros(B, np.float32), G)
    return
  r = _rng(B, G).integers(0, 3, B).astype(np.float32)  # small integers: ties and zero-variance groups
  _close(_both(getattr(A, name), r, group_size=G), ref_episode(name, r, G))


def test_episode_estimator_options_and_checks():
  r = _rng(0).normal(size=12).astype(np.float32)
  _close(A.grpo(r, 4, scale=False), ref_episode("dr_grpo", r, 4))
  _close(A.grpo(r, 4, eps=0.5), ref_episode("grpo", r, 4, eps=0.5))
  _close(A.reinforce_pp(r, 3, baseline=False), ref_episode("reinforce_pp", r, 3, baseline=False))
  with pytest.raises(ValueError, match="not a whole number of groups of 5"):
    A.grpo(r, 5)
  with pytest.raises(AssertionError):
    A.grpo(r.reshape(3, 4), 2)


@pytest.mark.parametrize("B,T,gamma,lam", [(3, 9, 1.0, 1.0), (5, 16, 0.9, 0.8), (1, 4, 0.99, 0.0)])
def test_gae_matches_reference(B, T, gamma, lam):
  rng = _rng(B, T)
  r, v = rng.normal(size=(2, B, T)).astype(np.float32)
  m = rng.random((B, T)) < 0.6
  m[0] = False  # a row without policy tokens
  adv, ret = _both(A.gae, r, v, m, gamma=gamma, lam=lam)
  _close(adv, ref_gae(r, v, m, gamma, lam)[0])
  _close(ret, ref_gae(r, v, m, gamma, lam)[1])
  with pytest.raises(AssertionError):
    A.gae(r, v[:, :-1], m, gamma, lam)


def test_gae_turns_and_discounted_returns():
  rng = _rng(7)
  r, v = rng.normal(size=(2, 6, 4)).astype(np.float32)
  live = _live(rng, 6, 4)
  adv, ret = _both(A.gae_turns, r, v, live, gamma=0.9, lam=0.7)
  _close(adv, ref_gae(r, v, live, 0.9, 0.7)[0])
  _close(ret, ref_gae(r, v, live, 0.9, 0.7)[1])
  _close(_both(A.discounted_returns, r, live, gamma=0.8), ref_rtg(r, live, 0.8))


@pytest.mark.parametrize("B,G,N", [(4, 2, 3), (8, 4, 5), (3, 1, 2)])
def test_gigpo_and_turn_rloo_match_reference(B, G, N):
  rng = _rng(B, G, N)
  r = rng.integers(0, 3, (B, N)).astype(np.float32)
  live = _live(rng, B, N)
  r = np.where(live, r, 0.0).astype(np.float32)
  keys = rng.integers(0, 3, (B, N)).astype(np.int32)  # few distinct states: many step groups
  got = _both(A.gigpo, r, live, keys, group_size=G, gamma=0.9, step_weight=0.5)
  _close(got, ref_gigpo(r, live, keys, G, 0.9, 0.5))
  _close(A.gigpo(r, live, np.arange(B * N).reshape(B, N), G, 0.9),  # all singletons: episode advantage only
         np.where(live, ref_episode("grpo", r.sum(1), G)[:, None], 0.0))
  _close(_both(A.turn_rloo, r, live, group_size=G, gamma=0.9), ref_turn_rloo(r, live, G, 0.9))
  with pytest.raises(AssertionError):
    A.gigpo(r, live, keys[:, :-1], G)


def test_group_stats():
  r = np.array([1, 1, 0, 1, 2, 2, 0.5, 0.5], np.float32)
  stats = _both(A.group_stats, r, group_size=2)
  np.testing.assert_array_equal(stats["zero_variance_B"], [1, 1, 0, 0, 1, 1, 1, 1])
  _close(stats["zero_variance_fraction"], 0.75)
  _close(A.group_stats(r, 4)["zero_variance_fraction"], 0.0)


# ---- Trajectory adapters -----------------------------------------------------------------------

P, ACT, FB = 3, 2, 2  # prompt slots; per turn: 1 header slot, ACT sampled slots, FB feedback slots


def make_traj(prompt, feedback, n_act, turn_reward, live):
  """A hand-laid Trajectory like the rollout's: prompt[b] tokens; feedback[b][n] the tokens turn n+1 sees."""
  B, N = turn_reward.shape
  T = P + N * (1 + ACT + FB)
  buf = {k: np.zeros((B, T), d) for k, d in [("tokens", np.int32), ("valid", bool), ("segment", np.int32),
                                             ("turn", np.int32), ("loss_mask", bool), ("logprob", np.float32),
                                             ("reward", np.float32)]}

  def put(b, s, token, seg, n, policy=False):
    buf["tokens"][b, s], buf["valid"][b, s], buf["segment"][b, s], buf["turn"][b, s] = token, True, seg, n
    buf["loss_mask"][b, s], buf["logprob"][b, s] = policy, -1.0 if policy else 0.0

  for b in range(B):
    for s, tok in enumerate(prompt[b]):
      put(b, s, tok, Segment.PROMPT, 0)
    for n in range(N):
      s = P + n * (1 + ACT + FB)
      if not live[b, n]:
        continue
      put(b, s, 99, Segment.ACT, n)
      for k in range(n_act[b, n]):
        put(b, s + 1 + k, 50 + k, Segment.ACT, n, policy=True)
      buf["reward"][b, s + n_act[b, n]] = turn_reward[b, n]
      if n + 1 < N and live[b, n + 1]:
        for k, tok in enumerate(feedback[b][n]):
          put(b, s + 1 + ACT + k, tok, Segment.FEEDBACK, n)
  buf["positions"] = np.cumsum(buf["valid"], 1).astype(np.int32) - 1
  per_turn = dict(turn_reward=turn_reward.astype(np.float32), turn_live=live, terminated=np.zeros_like(live),
                  truncated=np.zeros_like(live), verdict=-np.ones(live.shape, np.int32))
  return Trajectory(**buf, **per_turn, info={}, episode={})


def random_traj(n_tasks, G, N, seed):
  rng = _rng(seed)
  B = n_tasks * G
  live = _live(rng, B, N)
  prompt = np.repeat(rng.integers(1, 3, (n_tasks, P)), G, axis=0)  # the G samples of a task share the prompt
  feedback = [[list(rng.integers(1, 3, rng.integers(1, FB + 1))) for _ in range(N)] for _ in range(B)]
  n_act = rng.integers(1, ACT + 1, (B, N))
  reward = np.where(live, rng.integers(0, 3, (B, N)), 0).astype(np.float32)
  return make_traj(prompt, feedback, n_act, reward, live), prompt, feedback


def ref_per_turn(x_BxN, traj):
  out = np.zeros(traj.tokens.shape)
  for b, s in zip(*np.nonzero(traj.loss_mask)):
    out[b, s] = x_BxN[b, traj.turn[b, s]]
  return out


def test_turn_state_keys_equal_iff_observations_equal():
  N = 3
  traj, prompt, feedback = random_traj(3, 4, N, seed=1)
  keys = np.asarray(jax.jit(A.turn_state_keys)(traj))
  assert keys.shape == (12, N) and keys.dtype == np.int32
  seen = {(b, n): tuple(prompt[b]) if n == 0 else tuple(feedback[b][n - 1])
          for b in range(12) for n in range(N) if traj.turn_live[b, n]}
  assert len(set(seen.values())) > 3  # the check below sees equal and different observations
  for p, obs_p in seen.items():
    for q, obs_q in seen.items():
      assert (keys[p] == keys[q]) == (obs_p == obs_q), (p, q, obs_p, obs_q)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_episode_adapters_broadcast_to_policy_tokens(name):
  traj, _, _ = random_traj(3, 2, 3, seed=2)
  est = jax.jit(functools.partial(get_advantage(name), group_size=2))(traj)
  returns_B = (traj.turn_reward * traj.turn_live).sum(1)
  per_row = lambda x: np.where(traj.loss_mask, np.asarray(x)[:, None], 0.0)
  _close(est.adv_BxT, per_row(ref_episode(name, returns_B, 2)))
  _close(est.returns_BxT, per_row(returns_B))


def test_turn_adapters_place_each_turns_advantage_on_its_tokens():
  G, N = 4, 3
  traj, _, _ = random_traj(2, G, N, seed=3)
  r, live = traj.turn_reward, traj.turn_live
  est = get_advantage("turn_rloo")(traj, group_size=G, gamma=0.9)
  _close(est.adv_BxT, ref_per_turn(ref_turn_rloo(r, live, G, 0.9), traj))
  _close(est.returns_BxT, ref_per_turn(ref_rtg(r, live, 0.9), traj))
  est = jax.jit(functools.partial(get_advantage("gigpo"), group_size=G, step_weight=0.3))(traj)
  keys = np.asarray(A.turn_state_keys(traj))
  _close(est.adv_BxT, ref_per_turn(ref_gigpo(r, live, keys, G, 0.95, 0.3), traj))
  _close(est.returns_BxT, ref_per_turn(ref_rtg(r, live, 0.95), traj))


def test_gae_adapters_use_rewards_and_values():
  traj, _, _ = random_traj(2, 2, 3, seed=4)
  values = _rng(5).normal(size=traj.tokens.shape).astype(np.float32)
  est = jax.jit(functools.partial(get_advantage("gae"), group_size=2, gamma=0.9, lam=0.8))(traj, values_BxT=values)
  adv, ret = ref_gae(traj.reward, values, traj.loss_mask, 0.9, 0.8)
  _close(est.adv_BxT, adv)
  _close(est.returns_BxT, ret)
  B, N = traj.turn_reward.shape
  first = {(b, traj.turn[b, s]): s for b, s in reversed(list(zip(*np.nonzero(traj.loss_mask))))}
  values_BxN = np.array([[values[b, first[b, n]] if (b, n) in first else 0.0 for n in range(N)] for b in range(B)])
  adv_t, ret_t = ref_gae(traj.turn_reward, values_BxN, traj.turn_live, 0.9, 0.8)
  est = get_advantage("gae_turns")(traj, group_size=2, values_BxT=values, gamma=0.9, lam=0.8)
  _close(est.adv_BxT, ref_per_turn(adv_t, traj))
  _close(est.returns_BxT, ref_per_turn(ret_t, traj))
  with pytest.raises(ValueError, match="needs values_BxT"):
    get_advantage("gae")(traj, group_size=2)


def test_registry_names_and_errors():
  names = ["dr_grpo", "gae", "gae_turns", "gigpo", "grpo", "reinforce_pp", "rloo", "turn_rloo"]
  assert registered()["advantage estimator"] == names
  with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'; available: \['dr_grpo', 'gae'"):
    get_advantage("ppo")
  with pytest.raises(ValueError, match="already registered"):
    register_advantage("grpo")(lambda traj: None)
  with pytest.raises(TypeError):
    get_advantage("grpo")(random_traj(1, 2, 2, 0)[0], group_size=2, gama=0.9)


def test_whiten_normalises_the_masked_tokens_only():
  rng = np.random.default_rng(0)
  adv = rng.normal(3.0, 5.0, (4, 9)).astype(np.float32)
  mask = rng.random((4, 9)) < 0.6
  out = np.asarray(A.whiten(adv, mask))
  np.testing.assert_allclose(out[mask], (adv[mask] - adv[mask].mean()) / adv[mask].std(), rtol=1e-4, atol=1e-5)
  assert (out[~mask] == 0).all()
  assert np.isfinite(np.asarray(A.whiten(adv, np.zeros_like(mask)))).all()
