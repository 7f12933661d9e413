"""Sokoban: contract, expert, solvable generated boards, push rules, deadlocks, obs text, vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import check_contract, check_expert_solves, check_jit_matches_eager, check_vmap_matches_single

import jarl.envs
from jarl.envs import sokoban

ENV = jarl.envs.make("sokoban")
RESET, STEP = ENV.jitted  # compiled once per env, shared with env_checks
VRESET, VSTEP = jax.jit(jax.vmap(ENV.reset)), jax.jit(jax.vmap(ENV.step))
B = 16  # every batch has this size, so the vmapped functions compile once



def _state(rows):
  """A hand-built state from XSB-like rows (# wall, _ floor, . target, $ box, * box on target, @ player)."""
  a = np.array([list(r) for r in rows])
  pos = np.argwhere((a == "@") | (a == "+"))[0]
  return sokoban.SokobanState(jnp.asarray(a == "#"), jnp.asarray(np.isin(a, [".", "*", "+"])),
                              jnp.asarray(np.isin(a, ["$", "*"])), jnp.asarray(pos, jnp.int32), jnp.int32(0))


def _step(state, text):
  return STEP(state, ENV.action_tokens(text), jax.random.key(0))


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def test_contract():
  check_contract(ENV)


def test_expert_solves():
  check_expert_solves(ENV, n_episodes=2)


def test_jit_matches_eager():
  check_jit_matches_eager(ENV)


@pytest.mark.parametrize("n_boxes", [1, 2])
def test_generated_boards_are_solvable_with_the_boxes_asked_for(n_boxes):
  env = ENV if n_boxes == 1 else jarl.envs.make("sokoban", n_boxes=n_boxes)
  reset = VRESET if n_boxes == 1 else jax.jit(jax.vmap(env.reset))
  batches = [jax.device_get(reset(jax.random.split(jax.random.key(seed), B))[0]) for seed in range(6)]
  lengths = []
  for i in range(6 * B):
    s = jax.tree.map(lambda x: x[i % B], batches[i // B])
    assert s.boxes_HxW.sum() == s.targets_HxW.sum() == n_boxes
    assert not s.walls_HxW[tuple(s.pos)] and not s.boxes_HxW[tuple(s.pos)]
    assert (s.boxes_HxW & ~s.targets_HxW).any()  # never solved at the start
    assert not (s.boxes_HxW & ~s.targets_HxW & np.asarray(sokoban.corners(s.walls_HxW))).any()  # nor dead
    path = sokoban.solve(s.walls_HxW, s.targets_HxW, s.boxes_HxW, tuple(s.pos.tolist()))
    assert path is not None and 1 <= len(path) <= env.reverse_steps
    lengths.append(len(path))
  assert np.mean(lengths) > 3  # reverse play makes real puzzles, not one-push ones


@pytest.mark.parametrize("seed", [7, 8])
def test_expert_solves_many_boards(seed):
  states, _ = VRESET(jax.random.split(jax.random.key(seed), B))
  solved = np.zeros(B, bool)
  for _ in range(ENV.reverse_steps):
    host = jax.device_get(states)
    actions = _stack([ENV.action_tokens(ENV.expert_action(jax.tree.map(lambda x: x[i], host))) for i in range(B)])
    states, _, reward, terminated, _, info = VSTEP(states, actions, jax.random.split(jax.random.key(0), B))
    assert np.asarray(info["valid_action"]).all() and not np.asarray(info["deadlock"])[~solved].any()
    solved |= np.asarray(info["success"])
  assert solved.all()


def test_obs_text():
  state = _state(["######", "#____#", "#_$@_#", "#_.__#", "#___*#", "######"])
  assert ENV.codec.text(ENV._obs(state)) == "######\n#____#\n#_$@_#\n#_.__#\n#___*#\n######"
  assert ENV.codec.text(ENV._obs(state.replace(pos=jnp.asarray([3, 2], jnp.int32)))).split("\n")[3] == "#_+__#"


def test_walls_and_stuck_boxes_block():
  state = _state(["######", "#_$__#", "#_@$$#", "#_.._#", "#____#", "######"])
  # a box against the wall, two boxes in a row, the wall
  for pos, text in [((2, 2), "up"), ((2, 2), "right"), ((2, 1), "left")]:
    start = state.replace(pos=jnp.asarray(pos, jnp.int32))
    _, obs, reward, terminated, _, info = _step(start, text)
    assert ENV.codec.text(obs) == ENV.codec.text(ENV._obs(start)), text
    assert bool(info["valid_action"]) and float(reward) == 0 and not bool(terminated)
  _, obs, *_ = _step(state, " Down ")
  assert ENV.codec.text(obs).split("\n")[2:4] == ["#__$$#", "#_+._#"]
  _, obs, *_, info = _step(state, "fly")
  assert not bool(info["valid_action"]) and ENV.codec.text(obs) == ENV.codec.text(ENV._obs(state))


def test_pushes_and_shaping():
  state = _state(["######", "#____#", "#@$._#", "#___$#", "#___.#", "######"])
  s, obs, reward, terminated, _, info = _step(state, "R")  # onto a target: + box_bonus
  assert ENV.codec.text(obs).split("\n")[2] == "#_@*_#" and np.isclose(float(reward), ENV.box_bonus)
  assert not bool(terminated) and int(info["boxes_on_target"]) == 1
  s, obs, reward, terminated, _, info = _step(s, "right")  # and off it again: the bonus is taken back
  assert ENV.codec.text(obs).split("\n")[2] == "#__+$#" and np.isclose(float(reward), -ENV.box_bonus)
  assert not bool(terminated) and not bool(info["deadlock"])


def test_solving_pays_one_and_terminates():
  state = _state(["######", "#____#", "#_@$.#", "#____#", "#____#", "######"])
  _, obs, reward, terminated, truncated, info = _step(state, "right")
  assert float(reward) == 1 and bool(terminated) and not bool(truncated) and bool(info["success"])
  assert ENV.codec.text(obs).split("\n")[2] == "#__@*#"


def test_deadlock_terminates_without_success():
  state = _state(["######", "#____#", "#_.__#", "#____#", "#@$__#", "######"])
  _, _, reward, terminated, _, info = _step(state, "right")  # along the wall, not into a corner
  assert not bool(info["deadlock"]) and not bool(terminated)
  state = _state(["######", "#____#", "#_.__#", "#____#", "#_$@_#", "######"])
  _, obs, reward, terminated, truncated, info = _step(state, "left")
  assert ENV.codec.text(obs).split("\n")[4] == "#$@__#"
  assert bool(info["deadlock"]) and bool(terminated) and not bool(truncated)
  assert not bool(info["success"]) and float(reward) == 0


def test_truncated_at_the_turn_limit():
  state = _state(["######", "#____#", "#_@$.#", "#____#", "#____#", "######"])
  _, _, _, terminated, truncated, _ = _step(state.replace(turn=jnp.int32(ENV.max_turns - 1)), "up")
  assert bool(truncated) and not bool(terminated)


def test_vmap_matches_single():
  check_vmap_matches_single(ENV, ["up", "down", "l", "x"] * (B // 4))
