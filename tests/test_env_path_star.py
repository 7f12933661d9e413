"""path_star: the graph in the obs, the path checker against a Python reference, both modes, contract."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from env_checks import check_contract, check_expert_solves, check_jit_matches_eager
from jarl.envs import make, path_star

ENV = make("path_star")
STEP_ENV = make("path_star", one_step_per_turn=True)
STEP = jax.jit(STEP_ENV.step)
VRESET, VSTEP = jax.jit(jax.vmap(ENV.reset)), jax.jit(jax.vmap(ENV.step))


def _graph(obs_text):
  """Host side: (edges {u: [v...]}, start, goal) read back from the obs text."""
  edges_text, task = obs_text.split(" | ")
  edges = {}
  for u, v in re.findall(r"(\d+)>(\d+)", edges_text):
    edges.setdefault(int(u), []).append(int(v))
  start, goal = map(int, re.findall(r"\d+", task))
  return edges, start, goal


def _solve(edges, start, goal):
  """Host side: depth-first search for the path."""
  if start == goal:
    return [start]
  for v in edges.get(start, []):
    rest = _solve(edges, v, goal)
    if rest:
      return [start] + rest
  return None


def reference(text, edges, start, goal, arm_length=3):
  """(valid, success, first_step_correct) of a whole-path answer, the slow obvious way."""
  path = [int(d) for d in "".join(c if c.isdigit() else " " for c in text).split()]
  if not 2 <= len(path) <= arm_length + 1 or path[0] != start:
    return False, False, False
  valid = all(v in edges.get(u, []) for u, v in zip(path, path[1:]))
  return valid, valid and path[-1] == goal and len(path) == arm_length + 1, path[1] == _solve(edges, start, goal)[1]


def _batch(n, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  states, obs = VRESET(keys)
  graphs = [_graph(ENV.codec.text(jax.tree.map(lambda x: x[i], obs))) for i in range(n)]
  return keys, states, graphs


def test_obs_is_a_shuffled_star_graph_with_a_reachable_goal():
  keys, states, graphs = _batch(96)
  orders = set()
  for i, (edges, start, goal) in enumerate(graphs):
    labels = [start] + [v for vs in edges.values() for v in vs]
    assert len(labels) == len(set(labels)) == 10 and all(0 <= x < 100 for x in labels)
    assert len(edges[start]) == 3 and all(len(vs) == 1 for u, vs in edges.items() if u != start)
    path = _solve(edges, start, goal)
    assert len(path) == 4 and goal not in edges  # the goal is a leaf, 3 steps out
    assert " ".join(map(str, path)) == ENV.expert_action(jax.tree.map(lambda x: x[i], jax.device_get(states)))
    orders.add(tuple(np.asarray(states.order_E[i]).tolist()))
  assert len(orders) > 20  # the edge list is shuffled
  counts = np.bincount(np.asarray(states.goal_arm), minlength=3)
  assert counts.min() >= 4


def test_expert_plan_traces_the_path_back_from_the_goal():
  keys, states, graphs = _batch(16, seed=3)
  for i, (edges, start, goal) in enumerate(graphs):
    plan = ENV.expert_plan(jax.tree.map(lambda x: x[i], jax.device_get(states)))
    back = [int(x) for x in plan.split("<")]
    assert back[0] == goal and back[-1] == start
    assert all(v in edges[u] for v, u in zip(back, back[1:]))  # each step reads the edge u>v into the node at hand
  turns = ENV.expert_episode(keys[0])
  assert turns[0]["plan_text"].split("<") == turns[0]["action_text"].split()[::-1]
  assert STEP_ENV.expert_plan(jax.tree.map(lambda x: x[0], jax.device_get(states))) is None


def _answers(rng, edges, start, goal):
  path = _solve(edges, start, goal)
  other = rng.choice([v for v in edges[start] if v != path[1]])
  wrong = [start, other] + [edges[other][0], edges[edges[other][0]][0]]
  return rng.choice([" ".join(map(str, path)), ", ".join(map(str, wrong)), " ".join(map(str, path[:-1])),
                     " ".join(map(str, path[1:])), " ".join(map(str, [start] + path[2:])),
                     " ".join(map(str, path + [goal])), f"{start} {rng.integers(100)} {rng.integers(100)}", "",
                     "->".join(map(str, path))])


def test_whole_path_matches_reference_and_vmap_matches_single():
  rng = np.random.default_rng(0)
  keys, states, graphs = _batch(96, seed=1)
  texts = [_answers(rng, *g) for g in graphs]
  actions = jax.tree.map(lambda *x: jnp.stack(x), *[ENV.action_tokens(t) for t in texts])
  out = VSTEP(states, actions, keys)
  info = out[5]
  got = list(zip(*[np.asarray(info[k]).tolist() for k in ("valid_action", "success", "first_step_correct")]))
  assert got == [reference(t, *g) for t, g in zip(texts, graphs)]
  assert np.asarray(out[3]).all() and not np.asarray(out[4]).any()  # one turn, always terminated
  verdict = ["correct" if s else "wrong" if v else "invalid" for v, s, _ in got]
  assert [ENV.codec.text(jax.tree.map(lambda x: x[i], out[1])) for i in range(96)] == verdict
  np.testing.assert_array_equal(np.asarray(out[2]), [s for _, s, _ in got])
  step = jax.jit(ENV.step)
  for i in range(0, 96, 23):
    one = step(jax.tree.map(lambda x: x[i], states), jax.tree.map(lambda x: x[i], actions), keys[i])
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(out)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])


def test_a_policy_that_does_not_plan_succeeds_one_time_in_degree():
  rng = np.random.default_rng(2)
  successes = []
  for seed in (2, 3, 4):
    keys, states, graphs = _batch(96, seed)
    texts = []
    for edges, start, goal in graphs:  # a random first step, then the only way on
      path = [start, int(rng.choice(edges[start]))]
      while path[-1] in edges:
        path.append(edges[path[-1]][0])
      texts.append(" ".join(map(str, path)))
    actions = jax.tree.map(lambda *x: jnp.stack(x), *[ENV.action_tokens(t) for t in texts])
    info = VSTEP(states, actions, keys)[5]
    assert np.asarray(info["valid_action"]).all()
    np.testing.assert_array_equal(info["success"], info["first_step_correct"])
    successes += np.asarray(info["success"]).tolist()
  assert abs(np.mean(successes) - 1 / 3) < 0.08


def _one_step_state():
  state, obs = jax.jit(STEP_ENV.reset)(jax.random.key(5))
  edges, start, goal = _graph(STEP_ENV.codec.text(obs))
  assert STEP_ENV.codec.text(obs).endswith(f" | at {start}, goal {goal}")
  return state, edges, start, goal


def test_one_step_per_turn_walk():
  state, edges, start, goal = _one_step_state()
  path = _solve(edges, start, goal)
  moves = [(str(path[2]), f"no edge, at {start}", False), ("x", f"no edge, at {start}", False),
           (f"go to {path[1]}", f"at {path[1]}", True), (str(path[2]), f"at {path[2]}", True),
           (str(path[3]), f"at {goal}, goal reached", True)]
  for i, (text, obs_text, valid) in enumerate(moves):
    state, obs, reward, term, trunc, info = STEP(state, STEP_ENV.action_tokens(text), jax.random.key(0))
    assert STEP_ENV.codec.text(obs) == obs_text and bool(info["valid_action"]) == valid
    last = i == len(moves) - 1
    assert bool(term) == last == bool(info["success"]) == (float(reward) == 1.0) and not trunc
    assert bool(info["first_step_correct"]) == (i >= 2)


def test_one_step_per_turn_wrong_arm_and_truncation():
  state, edges, start, goal = _one_step_state()
  wrong = [v for v in edges[start] if v != _solve(edges, start, goal)[1]][0]
  _, obs, reward, term, trunc, info = STEP(state, STEP_ENV.action_tokens(str(wrong)), jax.random.key(0))
  assert STEP_ENV.codec.text(obs) == f"at {wrong}, wrong arm"
  assert bool(term) and not trunc and float(reward) == 0.0 and not info["first_step_correct"] and info["valid_action"]
  for turn in range(STEP_ENV.max_turns):
    state, obs, reward, term, trunc, info = STEP(state, STEP_ENV.action_tokens(str(goal)), jax.random.key(0))
    assert not term and bool(trunc) == (turn == STEP_ENV.max_turns - 1)


def test_contract_and_expert():
  for env in (ENV, STEP_ENV):
    check_contract(env)
    check_expert_solves(env, n_episodes=2)
    check_jit_matches_eager(env)
  with pytest.raises(ValueError):
    make("path_star", max_turns=3)
  assert make("path_star", degree=4, arm_length=5, max_label=1000).obs_len <= 200
