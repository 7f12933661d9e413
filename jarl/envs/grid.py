"""Shared pieces of the grid environments (frozenlake, sokoban, subgoal_maze).

Positions are int32 [2] (row, col). Directions are indices into DIRECTIONS and DELTAS_4x2;
an action names one by its word or first letter, case-insensitively ("up", "U", " left\n"), or (answer
"first_word") by the first direction word in a sentence ("I move up.").
Boards are rendered in the graph as text rows: one piece per cell code, rows joined by "\n".
"""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import parse
from jarl.envs.codec import Codec, Tokens

Array = jax.Array

DIRECTIONS = ("up", "down", "left", "right")
DELTAS_4x2 = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], np.int32)
MOVE_WORDS = DIRECTIONS + tuple(d[0] for d in DIRECTIONS)


# How an action names its move: "exact": the whole reply is a move word or its letter ("up", " U\n");
# "first_word": the first of up / down / left / right among its words ("I move up."), for pretrained models
# that answer in sentences.
MOVE_ANSWERS = {"exact": (MOVE_WORDS, parse.match_choice), "first_word": (DIRECTIONS, parse.first_word)}


def move_table(answer: str = "exact") -> tuple[Array, Array]:
  """The move words `answer` reads (`MOVE_ANSWERS`) as a parse table; a matched index modulo 4 is the direction."""
  if answer not in MOVE_ANSWERS:
    raise ValueError(f"answer={answer!r}: moves are read as one of {sorted(MOVE_ANSWERS)}")
  return parse.byte_table(MOVE_ANSWERS[answer][0])


def parse_move(codec: Codec, action: Tokens, table: tuple[Array, Array], answer: str = "exact") -> Array:
  """The direction one action names (int32), -1 if it names none."""
  choice = MOVE_ANSWERS[answer][1](*codec.to_bytes(action, 4 * action.size), *table)
  return jnp.where(choice >= 0, choice % 4, -1)


def parse_moves(codec: Codec, action: Tokens, table: tuple[Array, Array], max_moves: int):
  """Several moves, e.g. "up up left": (directions [max_moves], count, ok)."""
  choice_M, count, ok = parse.match_words(*codec.to_bytes(action, 4 * action.size), *table, max_moves)
  return jnp.where(choice_M >= 0, choice_M % 4, -1), count, ok


def shift(pos: Array, direction: Array) -> Array:
  """pos moved one cell in `direction` (unbounded: callers check the board)."""
  return pos + jnp.asarray(DELTAS_4x2)[direction]


def inside(pos: Array, shape: tuple[int, int]) -> Array:
  return (pos[0] >= 0) & (pos[0] < shape[0]) & (pos[1] >= 0) & (pos[1] < shape[1])


def at(board_HxW: Array, pos: Array) -> Array:
  """board[pos] with pos clipped onto the board."""
  H, W = board_HxW.shape
  return board_HxW[jnp.clip(pos[0], 0, H - 1), jnp.clip(pos[1], 0, W - 1)]


def pick(u_N: Array, weight_N: Array, k: int) -> Array:
  """k distinct indices, drawn with probability proportional to weight (Gumbel top-k on uniforms u).

  Envs draw all of a reset's randomness in one `jax.random.uniform` call and slice it: every
  random call adds compile time.
  """
  return jax.lax.top_k(jnp.log(weight_N) - jnp.log(-jnp.log(u_N)), k)[1]


def cell(index: Array, width: int) -> Array:
  """A flat board index as a position."""
  return jnp.stack(jnp.divmod(index, width)).astype(jnp.int32)


def char_table(codec: Codec, chars: str) -> Tokens:
  """One piece per cell character, plus a final newline piece, for `render`."""
  return codec.piece_table(list(chars) + ["\n"])


def render(codec: Codec, table: Tokens, codes_HxW: Array) -> Tokens:
  """Rows of cell characters joined by newlines, in (H * (W + 1) - 1) * table.size slots."""
  H, W = codes_HxW.shape
  newline = table.ids.shape[0] - 1
  index_P = jnp.concatenate([codes_HxW, jnp.full((H, 1), newline, codes_HxW.dtype)], 1).reshape(-1)[:-1]
  ids_PxL, len_P = table.ids[index_P], table.length[index_P]
  size = index_P.shape[0] * table.size
  slot_PxL = (jnp.cumsum(len_P) - len_P)[:, None] + jnp.arange(table.size)[None, :]
  slot_PxL = jnp.where(jnp.arange(table.size)[None, :] < len_P[:, None], slot_PxL, size)
  ids = jnp.full((size,), codec.pad_id, jnp.int32).at[slot_PxL].set(ids_PxL, mode="drop")
  return Tokens(ids, len_P.sum().astype(jnp.int32))


def render_size(table: Tokens, shape: tuple[int, int]) -> int:
  """Slots `render` uses for a board of this shape."""
  return (shape[0] * (shape[1] + 1) - 1) * table.size


# ---- host side ---------------------------------------------------------------------------------


def bfs(free_HxW: np.ndarray, source) -> np.ndarray:
  """Host side: steps from source to every cell over free cells (-1 where unreachable)."""
  H, W = free_HxW.shape
  dist = np.full((H, W), -1, np.int64)
  dist[tuple(source)] = 0
  queue = deque([tuple(int(x) for x in source)])
  while queue:
    r, c = queue.popleft()
    for dr, dc in DELTAS_4x2:
      nr, nc = r + dr, c + dc
      if 0 <= nr < H and 0 <= nc < W and free_HxW[nr, nc] and dist[nr, nc] < 0:
        dist[nr, nc] = dist[r, c] + 1
        queue.append((nr, nc))
  return dist


def shortest_path(free_HxW: np.ndarray, start, goal) -> list[int]:
  """Host side: directions of a shortest path from start to goal ([] if none or already there)."""
  dist = bfs(free_HxW, goal)
  pos, path = np.asarray(start, np.int64), []
  if dist[tuple(pos)] < 0:
    return []
  while dist[tuple(pos)] > 0:
    for d, delta in enumerate(DELTAS_4x2):
      nxt = pos + delta
      if (0 <= nxt).all() and (nxt < free_HxW.shape).all() and dist[tuple(nxt)] == dist[tuple(pos)] - 1:
        path.append(d)
        pos = nxt
        break
  return path
