"""Mastermind: contract, expert (within max_turns on many secrets), feedback vs a slow reference, parsing, vmap."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
from env_checks import check_contract, check_expert_solves, check_jit_matches_eager, check_vmap_matches_single

import jarl.envs
from jarl.envs import mastermind

ENV = jarl.envs.make("mastermind")
RESET, STEP = ENV.jitted  # compiled once per env, shared with env_checks
VRESET, VSTEP = jax.jit(jax.vmap(ENV.reset)), jax.jit(jax.vmap(ENV.step))
B = 16  # every batch has this size, so the vmapped functions compile once



def _state(secret):
  T, L = ENV.max_turns, ENV.length
  return mastermind.MastermindState(jnp.asarray([int(c) - 1 for c in secret], jnp.int32), jnp.zeros((T, L), jnp.int32),
                                    jnp.zeros((T, 2), jnp.int32), jnp.int32(0), jnp.int32(0))


def _step(state, text):
  return STEP(state, ENV.action_tokens(text), jax.random.key(0))


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _reference(guess, secret):
  """The rules, spelled out: exact = right symbol in the right place; near = the rest of the
  common symbols, each secret symbol matched at most once."""
  exact = sum(g == s for g, s in zip(guess, secret))
  rest_g = collections.Counter(g for g, s in zip(guess, secret) if g != s)
  rest_s = collections.Counter(s for g, s in zip(guess, secret) if g != s)
  return exact, sum(min(n, rest_s[c]) for c, n in rest_g.items())


def test_contract():
  check_contract(ENV)


def test_expert_solves():
  check_expert_solves(ENV, n_episodes=2)


def test_jit_matches_eager():
  check_jit_matches_eager(ENV)


def test_feedback_matches_reference():
  rng = np.random.default_rng(0)
  pairs = rng.integers(0, 3, size=(200, 2, 4))  # few colours: many repeats
  pairs[100:] = rng.integers(0, 6, size=(100, 2, 4))
  got = jax.jit(jax.vmap(lambda g, s: mastermind.feedback(g, s, 6)))(pairs[:, 0], pairs[:, 1])
  for i, (g, s) in enumerate(pairs):
    assert (int(got[0][i]), int(got[1][i])) == _reference(g.tolist(), s.tolist()), (g, s)
    e, m = mastermind.host_feedback(s[None], g, 6)
    assert (int(e[0]), int(m[0])) == _reference(g.tolist(), s.tolist())


def test_obs_text_and_guess_parsing():
  state, obs = RESET(jax.random.key(0))
  assert ENV.codec.text(obs) == "guess 4 digits from 1-6"
  state = _state("1123")
  for text, want in [("1234", "1234: 1 exact, 2 near"), (" 3,2 1 1\n", "3211: 0 exact, 4 near"),
                     ("6655", "6655: 0 exact, 0 near"), ("1123", "1123: 4 exact, 0 near")]:
    _, obs, reward, terminated, _, info = _step(state, text)
    assert ENV.codec.text(obs) == want and bool(info["valid_action"]), text
    assert float(reward) == float(terminated) == float(info["success"]) == float(want.endswith("4 exact, 0 near"))
  for text in ["123", "12345", "1237", "1203", "12a4", "", "one"]:
    s, obs, reward, terminated, truncated, info = _step(state, text)
    assert ENV.codec.text(obs) == "invalid guess" and not bool(info["valid_action"]), text
    assert float(reward) == 0 and not bool(terminated) and int(s.turn) == 1 and int(s.n_guesses) == 0
    assert int(info["exact"]) == int(info["near"]) == 0


def test_history_and_truncation():
  state = _state("6543")
  for i, text in enumerate(["1111", "oops", "6544"]):
    state, *_ = _step(state, text)
  assert int(state.n_guesses) == 2 and int(state.turn) == 3
  np.testing.assert_array_equal(np.asarray(state.guesses_TxL[:2]), [[0, 0, 0, 0], [5, 4, 3, 3]])
  np.testing.assert_array_equal(np.asarray(state.feedback_Tx2[:2]), [[0, 0], [3, 0]])
  assert ENV.render(state).splitlines() == ["1111: 0 exact, 0 near", "6544: 3 exact, 0 near", "secret 6543 (turn 3/8)"]
  last = state.replace(turn=jnp.int32(ENV.max_turns - 1))
  _, _, _, terminated, truncated, _ = _step(last, "1111")
  assert bool(truncated) and not bool(terminated)
  _, _, reward, terminated, truncated, _ = _step(last, "6543")
  assert float(reward) == 1 and bool(terminated) and not bool(truncated)


def test_expert_solves_many_secrets_within_max_turns():
  for seed in range(4):
    states, _ = VRESET(jax.random.split(jax.random.key(seed), B))
    solved = np.zeros(B, bool)
    for _ in range(ENV.max_turns):
      host = jax.device_get(states)
      actions = _stack([ENV.action_tokens(ENV.expert_action(jax.tree.map(lambda x: x[i], host))) for i in range(B)])
      states, _, _, _, truncated, info = VSTEP(states, actions, jax.random.split(jax.random.key(0), B))
      assert np.asarray(info["valid_action"]).all()
      solved |= np.asarray(info["success"])
    assert solved.all()


def test_host_solver_worst_case_on_a_sample():
  rng = np.random.default_rng(1)
  for secret in rng.integers(0, 6, size=(40, 4)):
    history = []
    for n in range(1, 7):  # Knuth-style play needs at most 6 guesses for 4 of 6 (all 1296 checked once)
      guess = mastermind.solve_step(history, 4, 6)
      e, m = mastermind.host_feedback(secret[None], guess, 6)
      if e[0] == 4:
        break
      history.append((guess, (int(e[0]), int(m[0]))))
    assert e[0] == 4, secret


def test_vmap_matches_single():
  check_vmap_matches_single(ENV, ["1234", "1 1 2 2", "12", "x"] * (B // 4))
