"""Sokoban: push every box onto a target in a small walled room.

Board (made in the graph from the key by reverse play): a `size` x `size` room with a wall
border; `n_boxes` boxes start on their targets. The player stands two cells beside target 0
and steps away, pulling box 0 off it; then `reverse_steps - 1` random reverse moves follow
(the player steps to a free cell, pulling along any box right behind it; moves that pull are
`pull_weight` times likelier). The puzzle is the reverse-play state with the most boxes off
target, then the most pulls (the latest among ties). Playing the reverse moves backwards
(pulls become pushes) solves it, so every board is solvable in at most `reverse_steps` moves,
at least one box starts off its target, and no box starts in a corner.

    obs      ######    # wall, _ floor, . target, $ box, * box on target, @ player,
             #_@__#    + player on target; rows joined by newlines
             #__$_#
             #____#
             #_.__#
             ######
    action   "right"   (up/down/left/right or u/d/l/r, any case; walking into a box pushes it)

A move into a wall, or a push into a wall or another box, leaves the board unchanged (still a
valid action).

Reward: 1 when every box is on a target (terminated, success); otherwise `box_bonus` for a box
pushed onto a target and -`box_bonus` for one pushed off (so it cannot be farmed);
reward_range = (-box_bonus, 1). With `end_on_deadlock` (default) a box pushed off-target into
a corner (it can never move again) terminates the episode with success False; other dead
positions just run to truncation at `max_turns`. info: boxes_on_target, deadlock.

Sizes (kwargs): size=6, n_boxes=1 (1 or 2), reverse_steps=12, pull_weight=4, box_bonus=0.1,
max_turns=20, action_len=8; obs_len = size * (size + 1) - 1 (41 with the defaults). The host
expert is a BFS over (player, boxes) states (optimal; a 4x4 floor has a few thousand).
"""

from __future__ import annotations

from collections import deque

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import grid
from jarl.envs.base import TextEnv, register
from jarl.envs.codec import Codec, Tokens

Array = jax.Array

FLOOR, WALL, TARGET, BOX, BOX_ON_TARGET, PLAYER, PLAYER_ON_TARGET = range(7)
CHARS = "_#.$*@+"


@flax.struct.dataclass
class SokobanState:
  walls_HxW: Array  # bool
  targets_HxW: Array  # bool
  boxes_HxW: Array  # bool
  pos: Array  # int32 [2]
  turn: Array  # int32, turns taken


def corners(walls_HxW: Array) -> Array:
  """bool [H, W]: floor cells with a wall above or below AND a wall left or right."""
  padded = jnp.pad(walls_HxW, 1, constant_values=True)
  vertical = padded[:-2, 1:-1] | padded[2:, 1:-1]
  horizontal = padded[1:-1, :-2] | padded[1:-1, 2:]
  return vertical & horizontal & ~walls_HxW


def reverse_move(walls_HxW: Array, boxes_HxW: Array, pos: Array, direction: Array) -> tuple[Array, Array, Array]:
  """The player steps to a free cell, pulling a box right behind it along: (boxes, pos, pulled)."""
  nxt, behind = grid.shift(pos, direction), grid.shift(pos, direction ^ 1)  # ^ 1 flips up<->down, left<->right
  can = ~grid.at(walls_HxW, nxt) & ~grid.at(boxes_HxW, nxt)
  pulled = can & grid.at(boxes_HxW, behind)
  moved_boxes = boxes_HxW.at[behind[0], behind[1]].set(False).at[pos[0], pos[1]].set(True)
  return jnp.where(pulled, moved_boxes, boxes_HxW), jnp.where(can, nxt, pos), pulled


@register("sokoban")
class Sokoban(TextEnv):
  instructions = "Push every box $ onto a target . ; you are @. Answer with one move: up, down, left or right."

  def __init__(self, codec: Codec, size: int = 6, n_boxes: int = 1, reverse_steps: int = 12, pull_weight: float = 4.0,
               box_bonus: float = 0.1, end_on_deadlock: bool = True, max_turns: int = 20, action_len: int = 8):
    if size < 6 or not 1 <= n_boxes <= 2 or reverse_steps < 1:
      raise ValueError("need size >= 6 (a 4x4 floor or more), 1 <= n_boxes <= 2 and reverse_steps >= 1")
    self.size, self.n_boxes, self.reverse_steps = size, n_boxes, reverse_steps
    self.pull_weight, self.box_bonus, self.end_on_deadlock = float(pull_weight), float(box_bonus), bool(end_on_deadlock)
    self.reward_range = (-self.box_bonus, 1.0)
    self.chars = grid.char_table(codec, CHARS)
    self.moves = grid.move_table()
    super().__init__(codec, obs_len=grid.render_size(self.chars, (size, size)), action_len=action_len,
                     max_turns=max_turns)

  def reset(self, key: Array) -> tuple[SokobanState, Tokens]:
    n, S = self.size, self.reverse_steps - 1
    u = jax.random.uniform(key, (3 * n * n + 4 * S,))  # target 0, first direction, other targets, walk
    u_3xN, u_Sx4 = u[:3 * n * n].reshape(3, n * n), u[3 * n * n:].reshape(S, 4)
    walls = jnp.pad(jnp.zeros((n - 2, n - 2), bool), 1, constant_values=True)
    target0 = grid.cell(grid.pick(u_3xN[0], ~walls.reshape(-1), 1)[0], n)
    # The first reverse move: from two cells beside target 0, step away pulling box 0 off it.
    far_D = jax.vmap(lambda d: ~grid.at(walls, grid.shift(grid.shift(target0, d), d)))(jnp.arange(4))
    direction = grid.pick(u_3xN[1, :4], far_D, 1)[0]
    box0 = grid.shift(target0, direction)
    pos = grid.shift(box0, direction)
    free = ~walls
    for c in (target0, box0, pos):
      free = free.at[c[0], c[1]].set(False)
    others = grid.pick(u_3xN[2], free.reshape(-1), self.n_boxes - 1)
    targets = jnp.zeros((n * n,), bool).at[others].set(True).reshape(n, n).at[target0[0], target0[1]].set(True)
    boxes = targets.at[target0[0], target0[1]].set(False).at[box0[0], box0[1]].set(True)

    def score(boxes, pulls):  # most boxes off target first, then most pulls
      return (boxes & ~targets).sum() * (self.reverse_steps + 1) + pulls

    def walk(carry, u_4):
      boxes, pos, pulls, best = carry
      boxes_D, pos_D, pulled_D = jax.vmap(reverse_move, (None, None, None, 0))(walls, boxes, pos, jnp.arange(4))
      weight_D = jnp.any(pos_D != pos, axis=1) * jnp.where(pulled_D, self.pull_weight, 1.0)
      d = grid.pick(u_4, weight_D, 1)[0]
      boxes, pos, pulls = boxes_D[d], pos_D[d], pulls + pulled_D[d]
      better = score(boxes, pulls) >= best[0]
      best = jax.tree.map(lambda new, old: jnp.where(better, new, old), (score(boxes, pulls), boxes, pos), best)
      return (boxes, pos, pulls, best), None

    start = (boxes, pos, jnp.int32(1), (score(boxes, 1), boxes, pos))
    (_, _, _, (_, boxes, pos)), _ = jax.lax.scan(walk, start, u_Sx4)
    state = SokobanState(walls, targets, boxes, pos, jnp.int32(0))
    return state, self._obs(state)

  def step(self, state: SokobanState, action: Tokens, key: Array):
    direction = grid.parse_move(self.codec, action, self.moves)
    valid = direction >= 0
    nxt = grid.shift(state.pos, jnp.maximum(direction, 0))
    beyond = grid.shift(nxt, jnp.maximum(direction, 0))
    box_ahead = grid.at(state.boxes_HxW, nxt)
    blocked = grid.at(state.walls_HxW, nxt) | (box_ahead & (grid.at(state.walls_HxW, beyond)
                                                            | grid.at(state.boxes_HxW, beyond)))
    move = valid & ~blocked
    pushed = state.boxes_HxW.at[nxt[0], nxt[1]].set(False).at[beyond[0], beyond[1]].set(True)
    boxes = jnp.where(move & box_ahead, pushed, state.boxes_HxW)
    placed = (boxes & state.targets_HxW).sum() - (state.boxes_HxW & state.targets_HxW).sum()
    solved = ~jnp.any(boxes & ~state.targets_HxW)
    deadlock = jnp.any(boxes & ~state.targets_HxW & corners(state.walls_HxW))
    terminated = solved | (deadlock & self.end_on_deadlock)
    reward = jnp.where(solved, 1.0, self.box_bonus * placed).astype(jnp.float32)
    state = state.replace(boxes_HxW=boxes, pos=jnp.where(move, nxt, state.pos), turn=state.turn + 1)
    info = dict(valid_action=valid, success=solved, deadlock=deadlock,
                boxes_on_target=(boxes & state.targets_HxW).sum().astype(jnp.int32))
    truncated = ~terminated & (state.turn >= self.max_turns)
    return state, self._obs(state), reward, terminated, truncated, info

  def _obs(self, state: SokobanState) -> Tokens:
    target = state.targets_HxW.astype(jnp.int32)
    codes = jnp.where(state.walls_HxW, WALL, jnp.where(state.boxes_HxW, BOX + target, TARGET * target))
    codes = codes.at[state.pos[0], state.pos[1]].set(PLAYER + target[state.pos[0], state.pos[1]])
    return grid.render(self.codec, self.chars, codes)

  def expert_action(self, state: SokobanState) -> str:
    path = solve(np.asarray(state.walls_HxW), np.asarray(state.targets_HxW), np.asarray(state.boxes_HxW),
                 tuple(np.asarray(state.pos).tolist()))
    return grid.DIRECTIONS[path[0] if path else 0]

  def render(self, state: SokobanState) -> str:
    return f"{self.codec.text(self._obs(state))}\n(turn {int(state.turn)}/{self.max_turns})"


def solve(walls_HxW: np.ndarray, targets_HxW: np.ndarray, boxes_HxW: np.ndarray, pos: tuple[int, int],
          max_states: int = 200_000) -> list[int] | None:
  """Host side: a shortest move sequence (directions) that puts every box on a target, or None."""
  targets = frozenset(zip(*np.nonzero(targets_HxW)))
  start = (pos, frozenset(zip(*np.nonzero(boxes_HxW))))
  parent = {start: None}
  queue = deque([start])
  while queue and len(parent) < max_states:
    node = queue.popleft()
    (r, c), boxes = node
    if boxes <= targets:
      path = []
      while parent[node] is not None:
        node, d = parent[node]
        path.append(d)
      return path[::-1]
    for d, (dr, dc) in enumerate(grid.DELTAS_4x2.tolist()):
      nxt, beyond = (r + dr, c + dc), (r + 2 * dr, c + 2 * dc)
      if walls_HxW[nxt]:
        continue
      if nxt in boxes:
        if walls_HxW[beyond] or beyond in boxes:
          continue
        child = (nxt, boxes - {nxt} | {beyond})
      else:
        child = (nxt, boxes)
      if child not in parent:
        parent[child] = (node, d)
        queue.append(child)
  return None
