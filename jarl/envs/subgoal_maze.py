"""Subgoal maze: reach the goal of a maze, setting your own subgoals on the way.

Maze (made in the graph from the key): a `size` x `size` grid (size odd) whose rooms are the
cells with both coordinates even; a random spanning tree over the rooms (Kruskal over
shuffled walls, in one `fori_loop`) opens the wall cells between joined rooms, so the maze is
connected (a perfect maze: one path between any two cells). Start and goal are distinct
random free cells. The maze distance to the goal is computed in the graph at reset.

    obs      ......P   # wall, . free, P player, G goal, * active subgoal; rows joined by
             ####.##   newlines, then the coordinates (row col, 0-based)
             ...#...
             .#####.
             G......
             ####.##
             .......
             at 0 6, goal 4 0
    action   "left left down"   (1 to `max_moves` moves: up/down/left/right or u/d/l/r, any
                                 case, split by spaces or commas; a move into a wall is skipped)
    plan     "... subgoal 1 4 ..."   (row col, read from the turn's PLAN segment)

The env reads the plan (`reads_plan`): the first "subgoal" (any case) in its first
`plan_bytes` bytes, then the first two numbers after it. A stated subgoal is *set* (replacing
any active one) when it is a free cell, not the player's cell, and strictly closer to the
goal (maze distance) than the closest the player has been this episode. It is *reached* when
the player stands on it within `subgoal_horizon` turns, counting the turn that set it; then it
pays `subgoal_bonus` once and clears. Otherwise it expires unpaid. Anti-farming: every bonus
needs a cell closer to the goal than any cell visited before, so a cell never pays twice,
wandering or stepping back and forth pays nothing, and one episode pays at most
`subgoal_bonus` times the start's distance to the goal. With plan=None (no PLAN segment) it is
a plain maze.

Reward: 1 on reaching the goal (terminated, success; later moves of the turn are dropped) plus
the subgoal bonus; reward_range = (0, 1 + subgoal_bonus). info: valid_action (1 to max_moves
moves, all recognised), success, subgoal_set, subgoal_reached, intrinsic_reward. Truncated
after `max_turns`.

Sizes (kwargs): size=7, max_moves=3, subgoal_horizon=2, subgoal_bonus=0.1, plan_bytes=128,
max_turns=16 (the longest shortest path in a 7x7 maze is 30 moves: 10 turns),
action_len=6 * max_moves (18); obs_len 72 with the defaults (board 55 + coordinates 17). The
host expert follows a BFS shortest path; `expert_plan` names the cell its moves reach, and
`expert_episode` passes it as the plan.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import grid, parse
from jarl.envs.base import TextEnv, register
from jarl.envs.codec import Codec, Tokens

Array = jax.Array

WALL, FREE, GOAL, SUBGOAL, PLAYER = range(5)
CHARS = "#.G*P"


@flax.struct.dataclass
class MazeState:
  free_HxW: Array  # bool
  dist_HxW: Array  # int32, maze distance to the goal (large on walls)
  goal: Array  # int32 [2]
  pos: Array  # int32 [2]
  best_dist: Array  # int32, the closest to the goal the player has been
  subgoal: Array  # int32 [2]
  subgoal_turns: Array  # int32, turns the subgoal stays active (0: none)
  turn: Array  # int32, turns taken


def maze_edges(rooms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Host side: for each wall between neighbouring rooms, (room a, room b, wall cell [2])."""
  edges = [(r * rooms + c, (r + dr) * rooms + c + dc, 2 * r + dr, 2 * c + dc)
           for r in range(rooms) for c in range(rooms) for dr, dc in ((0, 1), (1, 0))
           if r + dr < rooms and c + dc < rooms]
  a, b, row, col = np.array(edges, np.int32).T
  return a, b, np.stack([row, col], 1)


def random_maze(u_E: Array, size: int) -> Array:
  """bool [size, size]: free cells of a random perfect maze (Kruskal over walls shuffled by uniforms u_E)."""
  rooms = (size + 1) // 2
  a_E, b_E, cells_Ex2 = maze_edges(rooms)
  order_E = jnp.argsort(u_E)

  def join(i, carry):  # open the i-th shuffled wall if it joins two trees, then merge their labels
    label_R, open_E = carry
    e = order_E[i]
    la, lb = label_R[jnp.asarray(a_E)[e]], label_R[jnp.asarray(b_E)[e]]
    return jnp.where(label_R == lb, la, label_R), open_E.at[e].set(la != lb)

  _, open_E = jax.lax.fori_loop(0, len(a_E), join, (jnp.arange(rooms * rooms), jnp.zeros(len(a_E), bool)))
  room_HxW = (jnp.arange(size)[:, None] % 2 == 0) & (jnp.arange(size)[None, :] % 2 == 0)
  return room_HxW.at[cells_Ex2[:, 0], cells_Ex2[:, 1]].set(open_E)


def distances(free_HxW: Array, goal: Array) -> Array:
  """int32 [H, W]: steps to the goal over free cells (H * W where unreachable), by relaxation."""
  H, W = free_HxW.shape
  far = H * W

  def relax(_, dist):
    padded = jnp.pad(dist, 1, constant_values=far)
    near = jnp.minimum(jnp.minimum(padded[:-2, 1:-1], padded[2:, 1:-1]),
                       jnp.minimum(padded[1:-1, :-2], padded[1:-1, 2:]))
    return jnp.where(free_HxW, jnp.minimum(dist, near + 1), far)

  start = jnp.full((H, W), far, jnp.int32).at[goal[0], goal[1]].set(0)
  return jax.lax.fori_loop(0, H * W, relax, start)


@register("subgoal_maze")
class SubgoalMaze(TextEnv):
  reads_plan = True

  def __init__(self, codec: Codec, size: int = 7, max_moves: int = 3, subgoal_horizon: int = 2,
               subgoal_bonus: float = 0.1, plan_bytes: int = 128, max_turns: int = 16, action_len: int | None = None):
    if size < 3 or size % 2 == 0 or size > 99:
      raise ValueError(f"size must be odd and in [3, 99], got {size}")
    self.size, self.max_moves, self.plan_bytes = size, max_moves, plan_bytes
    self.subgoal_horizon, self.subgoal_bonus = subgoal_horizon, float(subgoal_bonus)
    self.reward_range = (0.0, 1.0 + self.subgoal_bonus)
    self.chars = grid.char_table(codec, CHARS)
    self.moves = grid.move_table()
    self.digits = len(str(size - 1))
    self.instructions = (f"Reach G in the maze; you are P. Answer with 1 to {max_moves} moves, e.g. 'up up left'. "
                         "In your plan you may name a subgoal cell as 'subgoal ROW COL'.")
    self.pieces = [codec.tokens(t, len(codec.encode(t))) for t in ("\nat ", " ", ", goal ")]
    at, space, goal = self.pieces
    coordinates_len = at.size + 2 * space.size + goal.size + 4 * codec.number(0, self.digits).size
    obs_len = grid.render_size(self.chars, (size, size)) + coordinates_len
    super().__init__(codec, obs_len=obs_len, action_len=action_len or 6 * max_moves, max_turns=max_turns)

  def reset(self, key: Array) -> tuple[MazeState, Tokens]:
    n, E = self.size, len(maze_edges((self.size + 1) // 2)[0])
    u = jax.random.uniform(key, (E + n * n,))  # maze walls, start and goal
    free = random_maze(u[:E], n)
    start, goal = (grid.cell(i, n) for i in grid.pick(u[E:], free.reshape(-1), 2))
    dist = distances(free, goal)
    state = MazeState(free, dist, goal, start, dist[start[0], start[1]], start, jnp.int32(0), jnp.int32(0))
    return state, self._obs(state)

  def step(self, state: MazeState, action: Tokens, key: Array, plan: Tokens | None = None):
    subgoal_set = jnp.bool_(False)
    if plan is not None:
      target, stated = self._parse_subgoal(plan)
      subgoal_set = stated & grid.inside(target, (self.size, self.size)) & grid.at(state.free_HxW, target)
      subgoal_set &= jnp.any(target != state.pos) & (grid.at(state.dist_HxW, target) < state.best_dist)
      state = state.replace(subgoal=jnp.where(subgoal_set, target, state.subgoal),
                            subgoal_turns=jnp.where(subgoal_set, self.subgoal_horizon, state.subgoal_turns))
    direction_M, count, valid = grid.parse_moves(self.codec, action, self.moves, self.max_moves)

    def move(carry, m):  # one move of the turn; none after the goal
      pos, best, reached, at_goal = carry
      nxt = grid.shift(pos, jnp.maximum(direction_M[m], 0))
      go = valid & (m < count) & ~at_goal & grid.inside(nxt, (self.size, self.size)) & grid.at(state.free_HxW, nxt)
      pos = jnp.where(go, nxt, pos)
      best = jnp.minimum(best, state.dist_HxW[pos[0], pos[1]])
      reached |= (state.subgoal_turns > 0) & jnp.all(pos == state.subgoal)
      return (pos, best, reached, jnp.all(pos == state.goal)), None

    start = (state.pos, state.best_dist, jnp.bool_(False), jnp.bool_(False))
    (pos, best, reached, at_goal), _ = jax.lax.scan(move, start, jnp.arange(self.max_moves))
    intrinsic = jnp.where(reached, self.subgoal_bonus, 0.0).astype(jnp.float32)
    state = state.replace(pos=pos, best_dist=best, turn=state.turn + 1,
                          subgoal_turns=jnp.where(reached, 0, jnp.maximum(state.subgoal_turns - 1, 0)))
    info = dict(valid_action=valid, success=at_goal, subgoal_set=subgoal_set, subgoal_reached=reached,
                intrinsic_reward=intrinsic)
    truncated = ~at_goal & (state.turn >= self.max_turns)
    return state, self._obs(state), at_goal.astype(jnp.float32) + intrinsic, at_goal, truncated, info

  def _parse_subgoal(self, plan: Tokens) -> tuple[Array, Array]:
    """(row col int32 [2], found) from the first two numbers after the word "subgoal"."""
    bytes_N, n = self.codec.to_bytes(plan, self.plan_bytes)
    at = parse.find(parse.lower(bytes_N), n, "subgoal")
    after_N = jnp.where(jnp.arange(self.plan_bytes) >= at + len("subgoal"), bytes_N, ord(" "))
    values, count, _ = parse.parse_ints(after_N, n, max_count=8, max_digits=3)
    return values[:2], (at >= 0) & (count >= 2)

  def _obs(self, state: MazeState) -> Tokens:
    codes = jnp.where(state.free_HxW, FREE, WALL).at[state.goal[0], state.goal[1]].set(GOAL)
    under = codes[state.subgoal[0], state.subgoal[1]]
    subgoal = jnp.where((state.subgoal_turns > 0) & (under == FREE), SUBGOAL, under)
    codes = codes.at[state.subgoal[0], state.subgoal[1]].set(subgoal).at[state.pos[0], state.pos[1]].set(PLAYER)
    at, space, goal = self.pieces
    number = lambda x: self.codec.number(x, self.digits)  # noqa: E731
    return self.codec.concat([grid.render(self.codec, self.chars, codes), at, number(state.pos[0]), space,
                              number(state.pos[1]), goal, number(state.goal[0]), space, number(state.goal[1])],
                             self.obs_len)

  def _expert_path(self, state: MazeState) -> list[int]:
    path = grid.shortest_path(np.asarray(state.free_HxW), state.pos, state.goal)
    return path[:self.max_moves]

  def expert_action(self, state: MazeState) -> str:
    return " ".join(grid.DIRECTIONS[d] for d in self._expert_path(state)) or "up"

  def expert_plan(self, state: MazeState) -> str:
    """Host side: the expert's subgoal, the cell its next moves reach."""
    cell = np.asarray(state.pos) + grid.DELTAS_4x2[self._expert_path(state)].sum(0)
    return f"subgoal {cell[0]} {cell[1]}"

  def plan_tokens(self, text: str) -> Tokens:
    return self.codec.tokens(text, self.plan_bytes)

  def render(self, state: MazeState) -> str:
    active = f", subgoal {int(state.subgoal[0])} {int(state.subgoal[1])}" if int(state.subgoal_turns) else ""
    return f"{self.codec.text(self._obs(state))}{active}\n(turn {int(state.turn)}/{self.max_turns})"
