"""Subgoal maze: contract (with and without plans), expert, perfect mazes, the subgoal bonus rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import check_contract, check_expert_solves, check_jit_matches_eager

import jarl.envs
from jarl.envs import grid, subgoal_maze

ENV = jarl.envs.make("subgoal_maze")
RESET, STEP = ENV.jitted  # compiled once per env, shared with env_checks
VRESET, VSTEP = jax.jit(jax.vmap(ENV.reset)), jax.jit(jax.vmap(ENV.step))
B = 16  # every batch has this size, so the vmapped functions compile once



SNAKE = ["P......", "######.", ".......", ".######", ".......", "######.", "G......"]  # 30 steps to G


def _state(rows):
  free = jnp.asarray([[c != "#" for c in r] for r in rows])
  a = np.array([list(r) for r in rows])
  pos, goal = (jnp.asarray(np.argwhere(a == c)[0], jnp.int32) for c in "PG")
  dist = subgoal_maze.distances(free, goal)
  return subgoal_maze.MazeState(free, dist, goal, pos, dist[pos[0], pos[1]], pos, jnp.int32(0), jnp.int32(0))


def _step(state, action, plan=None):
  if plan is None:
    return STEP(state, ENV.action_tokens(action), jax.random.key(0))
  return STEP(state, ENV.action_tokens(action), jax.random.key(0), ENV.plan_tokens(plan))


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def test_contract_without_plan():
  check_contract(ENV)


def test_fuzzed_plans_keep_the_contract_and_cannot_farm():
  rng = np.random.default_rng(0)
  states, _ = VRESET(jax.random.split(jax.random.key(3), B))
  start_dist = np.asarray(states.best_dist)
  intrinsic = np.zeros(B)
  for turn in range(ENV.max_turns):
    host = jax.device_get(states)
    plans, actions = [], []
    for i in range(B):
      r, c = rng.integers(0, ENV.size, 2) if rng.random() < 0.7 else np.asarray(host.pos[i]) + rng.integers(-2, 3, 2)
      plans.append(ENV.plan_tokens(rng.choice([f"subgoal {r} {c}", f"Subgoal: ({r}, {c})", "subgoal", "", "x 1 2"])))
      actions.append(ENV.action_tokens(" ".join(rng.choice(grid.MOVE_WORDS, rng.integers(0, 5)))[:ENV.action_len]))
    keys = jax.random.split(jax.random.key(turn), B)
    states, obs, reward, terminated, truncated, info = VSTEP(states, _stack(actions), keys, _stack(plans))
    r = np.asarray(reward)
    assert reward.dtype == jnp.float32 and (r >= 0).all() and (r <= 1 + ENV.subgoal_bonus + 1e-6).all()
    assert (np.asarray(obs.length) <= ENV.obs_len).all()
    for k in ("valid_action", "success", "subgoal_set", "subgoal_reached", "intrinsic_reward"):
      assert info[k].shape == (B,), k
    bonus = np.asarray(info["intrinsic_reward"])
    np.testing.assert_allclose(bonus, np.asarray(info["subgoal_reached"]) * ENV.subgoal_bonus)
    np.testing.assert_allclose(r, bonus + np.asarray(info["success"]), atol=1e-6)
    intrinsic += bonus
  assert (intrinsic <= start_dist * ENV.subgoal_bonus + 1e-6).all()


def test_expert_solves_and_earns_every_subgoal():
  for turns in check_expert_solves(ENV, n_episodes=2):
    assert all(bool(t["info"]["subgoal_set"]) and bool(t["info"]["subgoal_reached"]) for t in turns)
    assert np.isclose(turns[-1]["reward"], 1 + ENV.subgoal_bonus)


@pytest.mark.parametrize("seed", [7, 8])
def test_expert_solves_many_mazes_in_time(seed):
  states, _ = VRESET(jax.random.split(jax.random.key(seed), B))
  solved = np.zeros(B, bool)
  for _ in range(ENV.max_turns):
    batch = jax.device_get(states)
    host = [jax.tree.map(lambda x: x[i], batch) for i in range(B)]
    actions = _stack([ENV.action_tokens(ENV.expert_action(h)) for h in host])
    plans = _stack([ENV.plan_tokens(ENV.expert_plan(h)) for h in host])
    states, _, _, _, truncated, info = VSTEP(states, actions, jax.random.split(jax.random.key(0), B), plans)
    solved |= np.asarray(info["success"])
    assert not np.asarray(truncated)[~solved].any()
  assert solved.all()


def test_jit_matches_eager():
  check_jit_matches_eager(ENV)


def test_mazes_are_perfect_and_distances_exact():
  states = [jax.device_get(VRESET(jax.random.split(jax.random.key(seed), B))[0]) for seed in range(6)]
  rooms = ((ENV.size + 1) // 2) ** 2
  for i in range(6 * B):
    s = jax.tree.map(lambda x: x[i % B], states[i // B])
    assert s.free_HxW.sum() == 2 * rooms - 1  # the rooms plus a spanning tree's rooms - 1 openings
    dist = grid.bfs(s.free_HxW, s.goal)
    assert (dist[s.free_HxW] >= 0).all()  # connected
    np.testing.assert_array_equal(s.dist_HxW[s.free_HxW], dist[s.free_HxW])
    assert s.free_HxW[tuple(s.pos)] and (s.pos != s.goal).any() and s.best_dist == dist[tuple(s.pos)]


def test_obs_text_and_moves():
  state = _state(SNAKE)
  assert ENV.codec.text(ENV._obs(state)) == "\n".join(SNAKE) + "\nat 0 0, goal 6 0"
  s, obs, reward, *_, info = _step(state, "RIGHT, r  right")
  assert ENV.codec.text(obs).startswith("...P...\n") and ENV.codec.text(obs).endswith("at 0 3, goal 6 0")
  assert bool(info["valid_action"]) and float(reward) == 0 and not bool(info["subgoal_set"])
  s, obs, *_, info = _step(s, "up d down")  # moves into walls are skipped
  assert ENV.codec.text(obs).endswith("at 0 3, goal 6 0") and bool(info["valid_action"])
  for bad in ["up up up up", "", "up jump"]:
    s2, obs, *_, info = _step(s, bad)
    assert not bool(info["valid_action"]) and ENV.codec.text(obs).endswith("at 0 3, goal 6 0"), bad


def test_subgoal_bonus_paid_once_and_only_when_reached():
  state = _state(SNAKE)
  s, obs, reward, *_, info = _step(state, "right right", plan="I go right. Subgoal: (0, 2)")
  assert bool(info["subgoal_set"]) and bool(info["subgoal_reached"]) and np.isclose(float(reward), ENV.subgoal_bonus)
  assert ENV.codec.text(obs).startswith("..P....\n")
  for plan in ["subgoal 0 2", "subgoal 0 1", "subgoal 1 0", "subgoal 9 9", "subgoal 3", "goal 0 4"]:
    # the cell already earned / behind the player / a wall / off the board / one number / no keyword
    _, _, reward, *_, info = _step(s, "right", plan=plan)
    assert not bool(info["subgoal_set"]) and not bool(info["subgoal_reached"]) and float(reward) == 0, plan
  s, obs, reward, *_, info = _step(s, "right", plan="subgoal 0 5")  # set, not yet reached
  assert bool(info["subgoal_set"]) and not bool(info["subgoal_reached"]) and float(reward) == 0
  assert ENV.codec.text(obs).startswith("...P.*.\n")
  s, _, reward, *_, info = _step(s, "right right")  # reached on the next turn, without a plan
  assert bool(info["subgoal_reached"]) and np.isclose(float(reward), ENV.subgoal_bonus)
  s, _, reward, *_, info = _step(s, "left right", plan="subgoal 0 5")  # back there: pays nothing again
  assert not bool(info["subgoal_set"]) and float(reward) == 0


def test_subgoal_expires_after_the_horizon():
  s, obs, *_, info = _step(_state(SNAKE), "left", plan="subgoal 0 3")
  assert bool(info["subgoal_set"])
  for _ in range(ENV.subgoal_horizon - 1):
    s, obs, *_ = _step(s, "left")
  assert ENV.codec.text(obs).startswith("P......\n")  # the mark is gone
  s, _, reward, *_, info = _step(s, "right right right")
  assert not bool(info["subgoal_reached"]) and float(reward) == 0


def test_goal_ends_the_turn_and_pays_one():
  state = _state(["G.P....", "######.", ".......", ".######", ".......", "######.", "......."])
  s, obs, reward, terminated, truncated, info = _step(state, "left left left", plan="subgoal 0 0")
  assert bool(terminated) and not bool(truncated) and bool(info["success"])
  assert np.isclose(float(reward), 1 + ENV.subgoal_bonus) and int(s.pos[1]) == 0
  _, _, _, terminated, truncated, _ = _step(state.replace(turn=jnp.int32(ENV.max_turns - 1)), "right")
  assert bool(truncated) and not bool(terminated)


def test_vmap_matches_single():
  keys = jax.random.split(jax.random.key(5), B)
  states, obs = VRESET(keys)
  actions = _stack([ENV.action_tokens(t) for t in ["up", "down down", "l r l", "x"] * (B // 4)])
  plans = _stack([ENV.plan_tokens(f"subgoal {i % 7} {i // 2}" if i % 3 else "") for i in range(B)])
  batched = VSTEP(states, actions, keys, plans)
  for i in range(4):
    state, o = RESET(keys[i])
    np.testing.assert_array_equal(o.ids, obs.ids[i])
    single = STEP(state, *jax.tree.map(lambda x: x[i], (actions, keys, plans)))
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(batched)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])


class ChunkTokenizer:
  """Bytes plus a few multi-byte tokens, matched greedily: a stand-in for a BPE vocabulary."""

  def __init__(self):
    self.pieces = [bytes([i]) for i in range(256)] + [p.encode() for p in
                                                      ["right", "left", "down", "subgoal", "\nat ", ", goal ", "..", "##"]]
    self.pad_id, self.bos_id, self.eos_id = range(len(self.pieces), len(self.pieces) + 3)
    self.special_ids = frozenset({self.pad_id, self.bos_id, self.eos_id})
    self.vocab_size = len(self.pieces) + 3

  def encode(self, text, add_bos=False):
    data, ids = text.encode(), []
    while data:
      ids.append(max((i for i, p in enumerate(self.pieces) if data.startswith(p)), key=lambda i: len(self.pieces[i])))
      data = data[len(self.pieces[ids[-1]]):]
    return ids

  def token_bytes(self, token_id):
    return self.pieces[token_id] if token_id < len(self.pieces) else b""


def test_multi_byte_tokens():
  env = jarl.envs.make("subgoal_maze", tokenizer=ChunkTokenizer())
  key = jax.random.key(4)
  _, obs = jax.jit(env.reset)(key)
  assert env.codec.text(obs) == ENV.codec.text(RESET(key)[1]) and int(obs.length) < len(env.codec.text(obs))
  assert len(env.codec.encode("right right")) == 3
  plan = env.codec.tokens("then subgoal 0 2", 12)
  s, obs, reward, *_, info = jax.jit(env.step)(_state(SNAKE), env.action_tokens("right right"), key, plan)
  assert bool(info["subgoal_reached"]) and np.isclose(float(reward), env.subgoal_bonus)
  assert env.codec.text(obs) == ENV.codec.text(ENV._obs(s))
