"""Checks every TextEnv must pass: fuzzed actions never break the contract, experts solve it."""

import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import TextEnv, Tokens

FUZZ_ALPHABET = "0123456789+-*/()=,. \nudlrnoeswatyghkpvx<>[]#@ABC"


def _fuzz_actions(env: TextEnv, key, batch: int, rng: np.random.Generator) -> Tokens:
  """Half the rows random token ids, half random strings over a parser-friendly alphabet."""
  ids = jax.random.randint(key, (batch, env.action_len), 0, env.codec.tokenizer.vocab_size)
  lengths = rng.integers(0, env.action_len + 1, size=batch)
  rows = []
  for b in range(batch):
    if b % 2:
      text = "".join(rng.choice(list(FUZZ_ALPHABET), size=rng.integers(0, env.action_len + 1)))
      t = env.codec.tokens(text[:env.action_len], env.action_len)
      rows.append((np.asarray(t.ids), int(t.length)))
    else:
      rows.append((np.asarray(ids[b]), int(lengths[b])))
  return Tokens(jnp.asarray(np.stack([r[0] for r in rows]), jnp.int32), jnp.asarray([r[1] for r in rows], jnp.int32))


def check_contract(env: TextEnv, batch: int = 16, seed: int = 0) -> None:
  """Fuzz a batch of episodes through max_turns steps, checking shapes, dtypes and ranges."""
  rng = np.random.default_rng(seed)
  reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
  key = jax.random.key(seed)
  state, obs = reset(jax.random.split(key, batch))
  _check_obs(env, obs, batch)
  done = np.zeros(batch, bool)
  low, high = env.reward_range
  for turn in range(env.max_turns):
    key, k_act, k_step = jax.random.split(key, 3)
    action = _fuzz_actions(env, k_act, batch, rng)
    state, obs, reward, terminated, truncated, info = step(state, action, jax.random.split(k_step, batch))
    _check_obs(env, obs, batch)
    assert reward.shape == (batch,) and reward.dtype == jnp.float32
    r = np.asarray(reward)
    assert np.isfinite(r).all() and (r >= low - 1e-6).all() and (r <= high + 1e-6).all(), (r, env.reward_range)
    assert terminated.dtype == jnp.bool_ and truncated.dtype == jnp.bool_
    assert terminated.shape == truncated.shape == (batch,)
    for k in ("valid_action", "success"):
      assert k in info, f"info lacks {k!r}"
    for k, v in info.items():
      assert np.shape(v) == (batch,), (k, np.shape(v))
      assert np.isfinite(np.asarray(v, np.float64)).all(), k
    done |= np.asarray(terminated | truncated)
  assert done.all(), "every episode must end (terminated or truncated) within max_turns"


def _check_obs(env: TextEnv, obs: Tokens, batch: int) -> None:
  assert obs.ids.shape == (batch, env.obs_len) and obs.ids.dtype == jnp.int32
  length = np.asarray(obs.length)
  assert ((length >= 0) & (length <= env.obs_len)).all()
  assert (np.asarray(obs.ids) >= 0).all() and (np.asarray(obs.ids) < env.codec.tokenizer.vocab_size).all()


def check_expert_solves(env: TextEnv, n_episodes: int = 6, seed: int = 0) -> list[list[dict]]:
  """The expert's actions are valid at every turn and solve every episode."""
  episodes = []
  for i in range(n_episodes):
    turns = env.expert_episode(jax.random.key(seed + i))
    assert all(bool(t["info"]["valid_action"]) for t in turns), [t["action_text"] for t in turns]
    assert bool(turns[-1]["info"]["success"]) and turns[-1]["terminated"], turns[-1]
    episodes.append(turns)
  return episodes


def check_jit_matches_eager(env: TextEnv, seed: int = 0) -> None:
  key = jax.random.key(seed)
  reset, step = env.jitted
  s1, o1 = env.reset(key)
  s2, o2 = reset(key)
  np.testing.assert_array_equal(o1.ids, o2.ids)
  action = env.action_tokens(env.expert_action(jax.device_get(s1)))
  out1 = env.step(s1, action, key)
  out2 = step(s2, action, key)
  for a, b in zip(jax.tree.leaves(out1), jax.tree.leaves(out2)):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=1e-6)


def check_vmap_matches_single(env: TextEnv, action_texts: list[str], seed: int = 5) -> None:
  """A vmapped reset and step over a batch equal the unbatched ones, row by row."""
  keys = jax.random.split(jax.random.key(seed), len(action_texts))
  states, obs = jax.jit(jax.vmap(env.reset))(keys)
  actions = jax.tree.map(lambda *xs: jnp.stack(xs), *[env.action_tokens(t) for t in action_texts])
  batched = jax.jit(jax.vmap(env.step))(states, actions, keys)
  reset, step = env.jitted
  for i in range(len(action_texts)):
    state, o = reset(keys[i])
    np.testing.assert_array_equal(o.ids, obs.ids[i])
    single = step(state, jax.tree.map(lambda x: x[i], actions), keys[i])
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(batched)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])
