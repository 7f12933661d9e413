"""sort_repair: the verdict and the repair feedback against a Python reference, obs text, contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from env_checks import check_contract, check_expert_solves, check_jit_matches_eager
from jarl.envs import make, sort_repair

ENV = make("sort_repair")
RESET, STEP = jax.jit(ENV.reset), jax.jit(ENV.step)
VALUES = [42, 7, 19, 88, 3]


def _state(values):
  return sort_repair.SortState(jnp.asarray(values, jnp.int32), jnp.int32(0))


def reference(text, values):
  """(valid, correct, first_wrong) the slow, obvious way."""
  digits = "".join(c if c.isdigit() else " " for c in text).split()
  if len(digits) != len(values) or any(len(d) > 9 for d in digits):
    return False, False, 0
  wrong = [i + 1 for i, (a, b) in enumerate(zip(map(int, digits), sorted(values))) if a != b]
  return True, not wrong, wrong[0] if wrong else 0


def _random_answer(rng, values):
  answer = sorted(values)
  kind = rng.integers(6)
  if kind == 1:  # swap two
    i, j = rng.choice(len(answer), 2, replace=False)
    answer[i], answer[j] = answer[j], answer[i]
  elif kind == 2:  # change one
    answer[rng.integers(len(answer))] = int(rng.integers(0, 120))
  elif kind == 3:  # drop or add one
    answer = answer[:-1] if rng.random() < 0.5 else answer + [int(rng.integers(0, 100))]
  elif kind == 4:  # the input order
    answer = list(values)
  sep = rng.choice([" ", ", ", ","])
  return sep.join(map(str, answer)) + rng.choice(["", " ", "."])


@pytest.mark.parametrize("text,obs,first_wrong", [
    ("3 7 19 42 88", "correct", 0), ("3, 7, 19, 42, 88.", "correct", 0), ("3 7 42 19 88", "wrong at 3", 3),
    ("88 42 19 7 3", "wrong at 1", 1), ("3 7 19 42 89", "wrong at 5", 5), ("3 7 19 42", "invalid, need 5 numbers", 0),
    ("3 7 19 42 88 88", "invalid, need 5 numbers", 0), ("", "invalid, need 5 numbers", 0),
])
def test_feedback(text, obs, first_wrong):
  _, o, reward, terminated, truncated, info = STEP(_state(VALUES), ENV.action_tokens(text), jax.random.key(0))
  assert ENV.codec.text(o) == obs and int(info["first_wrong"]) == first_wrong
  correct = obs == "correct"
  assert float(reward) == correct and bool(terminated) == correct and not truncated
  assert bool(info["correct"]) == bool(info["success"]) == correct and bool(info["valid_action"]) == (obs[0] != "i")


def test_obs_and_repair_turns():
  state, obs = RESET(jax.random.key(1))
  values = np.asarray(state.values_N).tolist()
  assert ENV.codec.text(obs) == "Sort: " + " ".join(map(str, values)) and all(0 <= v < 100 for v in values)
  step, state = STEP, _state(VALUES)
  for text, truncated in [("3 7 42 19 88", False), ("3 7 19 42", False), ("3 7 19 88 42", True)]:
    state, obs, reward, term, trunc, info = step(state, ENV.action_tokens(text), jax.random.key(0))
    assert bool(trunc) == truncated and not term and float(reward) == 0.0
  last_turn = _state(VALUES).replace(turn=jnp.int32(2))  # a repair on the last turn ends the episode as solved
  _, obs, reward, term, trunc, _ = step(last_turn, ENV.action_tokens("3 7 19 42 88"), jax.random.key(0))
  assert bool(term) and not trunc and float(reward) == 1.0 and ENV.codec.text(obs) == "correct"


def test_verdict_matches_reference_and_vmap_matches_single():
  rng = np.random.default_rng(0)
  B = 64
  keys = jax.random.split(jax.random.key(0), B)
  states, _ = jax.jit(jax.vmap(ENV.reset))(keys)
  values = np.asarray(states.values_N).tolist()
  texts = [_random_answer(rng, v) for v in values]
  actions = jax.tree.map(lambda *x: jnp.stack(x), *[ENV.action_tokens(t) for t in texts])
  out = jax.jit(jax.vmap(ENV.step))(states, actions, keys)
  info = out[5]
  got = list(zip(np.asarray(info["valid_action"]).tolist(), np.asarray(info["correct"]).tolist(),
                 np.asarray(info["first_wrong"]).tolist()))
  assert got == [reference(t, v) for t, v in zip(texts, values)]
  assert 5 < sum(c for _, c, _ in got) < B - 5
  for i in range(0, B, 13):
    one = STEP(jax.tree.map(lambda x: x[i], states), jax.tree.map(lambda x: x[i], actions), keys[i])
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(out)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])


def test_contract_and_expert():
  check_contract(ENV)
  check_expert_solves(ENV, n_episodes=3)
  check_jit_matches_eager(ENV)
  check_contract(make("sort_repair", n=8, max_value=1000, max_turns=1), batch=8)
