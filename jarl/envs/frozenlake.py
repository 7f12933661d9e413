"""FrozenLake: walk across a frozen lake from S to G without falling into a hole.

Board (made in the graph from the key, `size` x `size`): start S and goal G are distinct
random cells at least `size - 1` steps apart; a random monotone path from S to G (its
vertical and horizontal steps shuffled) is kept frozen, and every other cell is a hole H
with probability `hole_prob`. So every board has a path from S to G, with no rejection loop.

    obs      FFFF      rows of S start, G goal, H hole, F frozen, P player (on S at first),
             FFHF      joined by newlines: "FFFF\nFFHF\nHFFF\nPFFG"
             HFFF
             PFFG
    action   "right"   (up/down/left/right or u/d/l/r, any case, surrounding whitespace ok; with
                       answer="first_word" the first direction word of a sentence: "I move right.")

A move off the board leaves the player in place (still a valid action). With
`slippery=True` the ice sends the player to one of the two perpendicular directions
(each half the time) with probability `slip_prob` (Gym's slippery lake: 2/3).

Reward: 1 on reaching G (terminated, success); `format_reward` (default 0) for any other move the
action names that does not end in a hole (a shaping signal for models that do not yet answer with
moves); stepping into a hole terminates with reward 0, success False and info["cost"] = 1.0 (0.0 on every other step, for constrained RL). Otherwise
truncated after `max_turns`. `forbidden` (moves into a hole) lets the action guard
(`make("frozenlake", guard=True)`, `jarl.envs.shield`) block them.

With `thin_ice=True` the H cells are thin ice instead: stepping on one costs 1 (info["cost"])
and the walk goes on, and no path is kept free, so the shortest walk often crosses ice and an
ice-free one (if any) is longer. Cost and reward then pull apart, which a cost budget needs to
have something to trade: with holes, falling in already loses the episode's reward. The host
expert then takes a shortest path with the fewest ice cells (the reward's choice, not the
cost's).

Sizes (kwargs): size=4, hole_prob=0.25, max_turns=2 * size * size (32), action_len=8;
obs_len = size * (size + 1) - 1 (19 with the defaults). The host expert walks a BFS
shortest path around the holes.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import grid
from jarl.envs.base import TextEnv, register
from jarl.envs.codec import Codec, Tokens

Array = jax.Array

FROZEN, HOLE, START, GOAL, PLAYER = range(5)
CHARS = "FHSGP"


@flax.struct.dataclass
class LakeState:
  holes_HxW: Array  # bool
  start: Array  # int32 [2]
  goal: Array  # int32 [2]
  pos: Array  # int32 [2]
  turn: Array  # int32, turns taken


def monotone_path(u_K: Array, start: Array, goal: Array, size: int) -> Array:
  """bool [size, size]: the cells of a random shortest (monotone) path from start to goal.

  u_K: K = 2 * (size - 1) uniforms that shuffle the order of the vertical and horizontal steps.
  """
  K = 2 * (size - 1)
  n_vert, n_horiz = jnp.abs(goal - start)
  k = jnp.arange(K)
  # Shuffle the first n_vert + n_horiz slots (n_vert vertical steps first); the rest stay still.
  order = jnp.argsort(jnp.where(k < n_vert + n_horiz, u_K, 1.0 + k))
  vertical_K = (k < n_vert)[order]
  moving_K = k < n_vert + n_horiz
  sign = jnp.sign(goal - start)
  steps_Kx2 = jnp.stack([vertical_K * sign[0], ~vertical_K * sign[1]], 1) * moving_K[:, None]
  cells_Kx2 = start + jnp.cumsum(steps_Kx2, axis=0)
  path = jnp.zeros((size, size), bool).at[start[0], start[1]].set(True)
  return path.at[cells_Kx2[:, 0], cells_Kx2[:, 1]].set(True)


@register("frozenlake")
class FrozenLake(TextEnv):
  instructions = "Walk from S to G without falling into a hole H; you are P. Answer with one move: up, down, left, right."

  def __init__(self, codec: Codec, size: int = 4, hole_prob: float = 0.25, slippery: bool = False,
               slip_prob: float = 2 / 3, max_turns: int | None = None, action_len: int = 8, thin_ice: bool = False,
               answer: str = "exact", format_reward: float = 0.0):
    if size < 2:
      raise ValueError(f"size must be >= 2, got {size}")
    self.size, self.hole_prob, self.thin_ice = size, float(hole_prob), bool(thin_ice)
    if self.thin_ice:
      self.instructions = ("Walk from S to G; you are P. Each step onto thin ice H costs 1. "
                           "Answer with one move: up, down, left, right.")
    self.slippery, self.slip_prob = bool(slippery), float(slip_prob)
    self.chars = grid.char_table(codec, CHARS)
    self.answer, self.moves = answer, grid.move_table(answer)
    self.format_reward = float(format_reward)
    super().__init__(codec, obs_len=grid.render_size(self.chars, (size, size)), action_len=action_len,
                     max_turns=2 * size * size if max_turns is None else max_turns)

  def reset(self, key: Array) -> tuple[LakeState, Tokens]:
    n = self.size
    u_4xN = jax.random.uniform(key, (4, n * n))  # start, goal, path order, holes
    start = grid.cell(jnp.argmax(u_4xN[0]), n)
    rows, cols = jnp.divmod(jnp.arange(n * n), n)
    far = jnp.abs(rows - start[0]) + jnp.abs(cols - start[1]) >= n - 1
    goal = grid.cell(grid.pick(u_4xN[1], far, 1)[0], n)
    if self.thin_ice:  # every cell but S and G may be ice
      path = jnp.zeros((n, n), bool).at[start[0], start[1]].set(True).at[goal[0], goal[1]].set(True)
    else:
      path = monotone_path(u_4xN[2, :2 * (n - 1)], start, goal, n)
    holes = (u_4xN[3] < self.hole_prob).reshape(n, n) & ~path
    state = LakeState(holes, start, goal, start, jnp.int32(0))
    return state, self._obs(state)

  def step(self, state: LakeState, action: Tokens, key: Array):
    direction = grid.parse_move(self.codec, action, self.moves, self.answer)
    valid = direction >= 0
    if self.slippery:
      u_2 = jax.random.uniform(key, (2,))
      side = jnp.where(direction < 2, 2, 0) + (u_2[1] < 0.5)
      direction = jnp.where(u_2[0] < self.slip_prob, side, direction)
    nxt = grid.shift(state.pos, jnp.maximum(direction, 0))
    pos = jnp.where(valid & grid.inside(nxt, (self.size, self.size)), nxt, state.pos)
    hole, goal = grid.at(state.holes_HxW, pos), jnp.all(pos == state.goal)
    terminated = goal if self.thin_ice else hole | goal
    state = state.replace(pos=pos, turn=state.turn + 1)
    info = dict(valid_action=valid, success=goal, cost=hole.astype(jnp.float32))
    truncated = ~terminated & (state.turn >= self.max_turns)
    reward = jnp.where(goal, 1.0, jnp.where(valid & ~hole, self.format_reward, 0.0)).astype(jnp.float32)
    return state, self._obs(state), reward, terminated, truncated, info

  def forbidden(self, state: LakeState, action: Tokens) -> Array:
    """The action guard's rule: a move into a hole (judged before any slip)."""
    direction = grid.parse_move(self.codec, action, self.moves, self.answer)
    nxt = grid.shift(state.pos, jnp.maximum(direction, 0))
    return (direction >= 0) & grid.inside(nxt, (self.size, self.size)) & grid.at(state.holes_HxW, nxt)

  def _obs(self, state: LakeState) -> Tokens:
    codes = jnp.where(state.holes_HxW, HOLE, FROZEN)
    codes = codes.at[state.start[0], state.start[1]].set(START).at[state.goal[0], state.goal[1]].set(GOAL)
    return grid.render(self.codec, self.chars, codes.at[state.pos[0], state.pos[1]].set(PLAYER))

  def expert_action(self, state: LakeState) -> str:
    holes = np.asarray(state.holes_HxW)
    if self.thin_ice:
      return grid.DIRECTIONS[_fewest_ice_first_move(holes, np.asarray(state.pos), np.asarray(state.goal))]
    path = grid.shortest_path(~holes, state.pos, state.goal)
    return grid.DIRECTIONS[path[0] if path else 0]

  def render(self, state: LakeState) -> str:
    return f"{self.codec.text(self._obs(state))}\n(turn {int(state.turn)}/{self.max_turns})"


def _fewest_ice_first_move(ice_HxW: np.ndarray, pos: np.ndarray, goal: np.ndarray) -> int:
  """Host side: the first direction of a shortest walk from pos to goal with the fewest ice cells
  stepped on (every cell is walkable, so the shortest walks are the monotone ones); 0 at the goal."""
  dist_HxW = grid.bfs(np.ones_like(ice_HxW), goal)

  def nearer(cell):  # (direction, neighbour) one step closer to the goal
    for d, delta in enumerate(grid.DELTAS_4x2):
      nxt = tuple(int(x) for x in np.add(cell, delta))
      if all(0 <= x < n for x, n in zip(nxt, ice_HxW.shape)) and dist_HxW[nxt] == dist_HxW[cell] - 1:
        yield d, nxt

  ice_to_go = np.zeros(ice_HxW.shape)  # fewest ice cells entered on a shortest walk from each cell
  for cell in sorted(np.ndindex(*ice_HxW.shape), key=lambda c: dist_HxW[c])[1:]:
    ice_to_go[cell] = min(ice_HxW[nxt] + ice_to_go[nxt] for _, nxt in nearer(cell))
  moves = list(nearer(tuple(int(x) for x in pos)))
  return min(moves, key=lambda m: ice_HxW[m[1]] + ice_to_go[m[1]])[0] if moves else 0
