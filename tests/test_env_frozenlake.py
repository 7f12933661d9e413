"""FrozenLake: contract, expert, solvable boards, hand-built outcomes, obs text, vmap."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import check_contract, check_expert_solves, check_jit_matches_eager, check_vmap_matches_single

import jarl.envs
from jarl.envs import frozenlake, grid

ENV = jarl.envs.make("frozenlake")
RESET, STEP = ENV.jitted  # compiled once per env, shared with env_checks
VRESET, VSTEP = jax.jit(jax.vmap(ENV.reset)), jax.jit(jax.vmap(ENV.step))
B = 16  # every batch has this size, so the vmapped functions compile once



def _state(holes, start, goal, pos=None):
  """A hand-built board from row strings of '.' and 'H'."""
  holes = jnp.asarray([[c == "H" for c in row] for row in holes])
  start, goal = jnp.asarray(start, jnp.int32), jnp.asarray(goal, jnp.int32)
  return frozenlake.LakeState(holes, start, goal, start if pos is None else jnp.asarray(pos, jnp.int32), jnp.int32(0))


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _step(state, text):
  return STEP(state, ENV.action_tokens(text), jax.random.key(0))


def test_contract():
  check_contract(ENV)


def test_expert_solves():
  check_expert_solves(ENV, n_episodes=2)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_expert_solves_many_boards(seed):
  states, _ = VRESET(jax.random.split(jax.random.key(seed), B))
  solved = np.zeros(B, bool)
  for _ in range(2 * (ENV.size - 1)):  # the longest shortest path
    host = jax.device_get(states)
    actions = _stack([ENV.action_tokens(ENV.expert_action(jax.tree.map(lambda x: x[i], host))) for i in range(B)])
    states, _, _, _, _, info = VSTEP(states, actions, jax.random.split(jax.random.key(0), B))
    assert np.asarray(info["valid_action"]).all() and not np.asarray(info["cost"])[~solved].any()
    solved |= np.asarray(info["success"])
  assert solved.all()


def test_jit_matches_eager():
  check_jit_matches_eager(ENV)


@pytest.mark.parametrize("size", [4, 7])
def test_boards_always_have_a_path(size):
  env = ENV if size == 4 else jarl.envs.make("frozenlake", size=size, hole_prob=0.6)
  reset = VRESET if size == 4 else jax.jit(jax.vmap(env.reset))
  holes_fraction = []
  for seed in range(10):
    states = jax.device_get(reset(jax.random.split(jax.random.key(seed), B))[0])
    for holes, start, goal in zip(states.holes_HxW, states.start, states.goal):
      assert not holes[tuple(start)] and not holes[tuple(goal)]
      assert np.abs(goal - start).sum() >= size - 1
      assert grid.bfs(~holes, start)[tuple(goal)] == np.abs(goal - start).sum()  # the monotone path is free
      holes_fraction.append(holes.mean())
  assert 0.3 * env.hole_prob < np.mean(holes_fraction) < env.hole_prob  # cells off the path are holes that often


def test_obs_text_and_moves():
  state = _state(["....", ".H..", "...H", "...."], start=(0, 0), goal=(3, 3))
  assert ENV.codec.text(ENV._obs(state)) == "PFFF\nFHFF\nFFFH\nFFFG"
  state, obs, reward, terminated, truncated, info = _step(state, "  Right\n")
  assert ENV.codec.text(obs) == "SPFF\nFHFF\nFFFH\nFFFG" and bool(info["valid_action"])
  assert float(reward) == 0 and not terminated and not truncated and float(info["cost"]) == 0
  state, obs, *_, info = _step(state, "u")  # off the board: stays, still valid
  assert ENV.codec.text(obs) == "SPFF\nFHFF\nFFFH\nFFFG" and bool(info["valid_action"])
  state, obs, *_, info = _step(state, "jump")
  assert ENV.codec.text(obs) == "SPFF\nFHFF\nFFFH\nFFFG" and not bool(info["valid_action"])
  assert int(state.turn) == 3


def test_first_word_answers_and_the_format_reward():
  """answer="first_word" (pretrained models' replies): the first of up / down / left / right among the reply's
  words names the move; a bare letter, a longer word or a reply with no direction is not a move.
  format_reward: paid for a move that neither reaches G (1) nor falls into a hole (0)."""
  env = jarl.envs.make("frozenlake", answer="first_word", action_len=24)
  step = jax.jit(env.step)
  state = _state(["....", ".H..", "...H", "...."], start=(1, 0), goal=(3, 3))
  for text, valid, obs in (("I move right, then up.", True, "FFFF\nSPFF\nFFFH\nFFFG"),  # right: into the hole
                           (" UP!", True, "PFFF\nSHFF\nFFFH\nFFFG"),
                           ("u", False, "FFFF\nPHFF\nFFFH\nFFFG"),
                           ("upward", False, "FFFF\nPHFF\nFFFH\nFFFG"),
                           ("I stay", False, "FFFF\nPHFF\nFFFH\nFFFG")):
    _, got, _, _, _, info = step(state, env.action_tokens(text), jax.random.key(0))
    assert bool(info["valid_action"]) == valid and env.codec.text(got) == obs, text
  shaped = jarl.envs.make("frozenlake", format_reward=0.1)  # any move but into a hole or onto G
  for text, reward in (("down", 0.1), ("jump", 0.0), ("right", 0.0)):
    assert float(shaped.step(state, shaped.action_tokens(text), jax.random.key(0))[2]) == pytest.approx(reward), text
  goal_state = _state(["....", ".H..", "...H", "...."], start=(3, 2), goal=(3, 3))
  assert float(shaped.step(goal_state, shaped.action_tokens("r"), jax.random.key(0))[2]) == 1.0
  with pytest.raises(ValueError, match="answer='last': moves are read as one of"):
    jarl.envs.make("frozenlake", answer="last")


def test_hole_terminates_with_cost():
  state = _state(["....", ".H..", "....", "...."], start=(0, 1), goal=(3, 3))
  _, obs, reward, terminated, truncated, info = _step(state, "down")
  assert bool(terminated) and not bool(truncated) and float(reward) == 0
  assert float(info["cost"]) == 1.0 and info["cost"].dtype == jnp.float32 and not bool(info["success"])
  assert ENV.codec.text(obs) == "FSFF\nFPFF\nFFFF\nFFFG"


def test_goal_pays_one_and_turn_limit_truncates():
  state = _state(["....", "....", "....", "...."], start=(3, 2), goal=(3, 3))
  _, _, reward, terminated, truncated, info = _step(state, "RIGHT")
  assert float(reward) == 1 and bool(terminated) and not bool(truncated) and bool(info["success"])
  _, _, reward, terminated, truncated, _ = _step(state.replace(turn=jnp.int32(ENV.max_turns - 2)), "left")
  assert not bool(truncated)
  _, _, reward, terminated, truncated, _ = _step(state.replace(turn=jnp.int32(ENV.max_turns - 1)), "left")
  assert float(reward) == 0 and not bool(terminated) and bool(truncated)
  _, _, _, terminated, truncated, _ = _step(state.replace(turn=jnp.int32(ENV.max_turns - 1)), "right")
  assert bool(terminated) and not bool(truncated)  # reaching the goal on the last turn is not truncation


def test_slippery_goes_sideways():
  env = jarl.envs.make("frozenlake", slippery=True, slip_prob=1.0)
  state = _state(["....", "....", "....", "...."], start=(1, 1), goal=(3, 3))
  step = jax.jit(jax.vmap(env.step, in_axes=(None, None, 0)))
  ends = step(state, env.action_tokens("down"), jax.random.split(jax.random.key(0), B))[0].pos
  assert {tuple(p) for p in np.asarray(ends).tolist()} == {(1, 0), (1, 2)}


def test_vmap_matches_single():
  check_vmap_matches_single(ENV, ["up", "down", "l", "x"] * (B // 4))


ICE = jarl.envs.make("frozenlake", thin_ice=True, hole_prob=0.35, max_turns=8)


def test_thin_ice_contract_and_expert():
  check_contract(ICE)
  check_expert_solves(ICE, n_episodes=2)


def test_thin_ice_costs_and_the_walk_goes_on():
  state = _state(["....", ".H..", "....", "...."], start=(0, 1), goal=(3, 1))
  step = jax.jit(ICE.step)
  state, obs, reward, terminated, truncated, info = step(state, ICE.action_tokens("down"), jax.random.key(0))
  assert float(info["cost"]) == 1.0 and not bool(terminated) and not bool(truncated) and float(reward) == 0
  assert ICE.codec.text(obs) == "FSFF\nFPFF\nFFFF\nFGFF"
  state, obs, *_, info = step(state, ICE.action_tokens("down"), jax.random.key(0))
  assert float(info["cost"]) == 0 and ICE.codec.text(obs) == "FSFF\nFHFF\nFPFF\nFGFF"
  _, _, reward, terminated, _, info = step(state, ICE.action_tokens("down"), jax.random.key(0))
  assert float(reward) == 1 and bool(terminated) and bool(info["success"])
  assert "thin ice" in ICE.instructions and "thin ice" not in ENV.instructions


def _fewest_ice_brute_force(ice, start, goal):
  """The fewest ice cells entered over every monotone (shortest) walk."""
  (dr, dc), best = np.subtract(goal, start), None
  steps = [(int(np.sign(dr)), 0)] * abs(dr) + [(0, int(np.sign(dc)))] * abs(dc)
  for order in set(itertools.permutations(steps)):
    cells = np.asarray(start) + np.cumsum(order, 0)
    cost = int(ice[cells[:, 0], cells[:, 1]].sum())
    best = cost if best is None else min(best, cost)
  return best


def test_thin_ice_boards_and_the_experts_walk():
  """No free path is kept (some boards' shortest walks all cross ice); the expert walks a shortest
  path that steps on the fewest ice cells."""
  states, _ = jax.jit(jax.vmap(ICE.reset))(jax.random.split(jax.random.key(3), 64))
  states = jax.device_get(states)
  forced = 0
  for i in range(64):
    state = jax.tree.map(lambda x: x[i], states)
    ice, start, goal = np.asarray(state.holes_HxW), np.asarray(state.start), np.asarray(state.goal)
    assert not ice[tuple(start)] and not ice[tuple(goal)]
    fewest = _fewest_ice_brute_force(ice, start, goal)
    forced += fewest > 0
    cost, turns = 0.0, 0
    while not (np.asarray(state.pos) == goal).all():
      state, _, _, _, _, info = ICE.step(state, ICE.action_tokens(ICE.expert_action(state)), jax.random.key(0))
      cost, turns = cost + float(info["cost"]), turns + 1
    assert turns == np.abs(goal - start).sum() and cost == fewest
  assert 0 < forced < 64
