"""Path-star: find the path from the center of a star graph to a given leaf.

From Bachmann & Nagarajan 2024, "The pitfalls of next-token prediction": a center node with
`degree` arms, each a chain of `arm_length` nodes leading away from it; nodes carry distinct
random labels from [0, max_label). The obs lists the degree * arm_length edges "u>v" (pointing
away from the center) in shuffled order, then the start (the center) and the goal (a leaf).
Only the first step needs planning: after it every node has one way on. A policy that does not
plan (picks an arm, then follows it) reaches the goal with probability 1/degree; the paper shows
teacher-forced next-token training can stall at that rate: it learns to follow edges (the
"Clever Hans" cheat) but not to plan back from the goal.
info["first_step_correct"] measures exactly that step.

Two modes (kwarg `one_step_per_turn`):

  whole path (default)  action: the path from start to goal, arm_length + 1 labels, any
                        non-digits between them, e.g. "5 17 8 42". One turn, always terminated.
                        obs "5>17 30>2 17>8 ... 8>42 | path 5 to 42"; feedback "correct" |
                        "wrong" (a legal walk that misses the goal) | "invalid".
  one step per turn     action: the next node, e.g. "17". obs "5>17 ... | at 5, goal 42";
                        feedback "at 17" | "at 42, goal reached" | "at 30, wrong arm"
                        (terminated: the goal is out of reach) | "no edge, at 5" (no move).
                        max_turns defaults to arm_length + 2, then truncated.

The expert's plan (`expert_plan`, whole-path mode) traces the path back from the goal,
"42<8<17<5": each step finds the one edge into the node at hand, so a PLAN segment trained on it
turns the first step's lookahead into a chain of single lookups (the reverse-order fix of
Bachmann & Nagarajan); the env does not read it.

Reward: 1 when the goal is reached (success), else 0. valid_action: the path is a legal walk from
the start (whole path), or the move follows an edge (one step per turn).

Sizes (kwargs): degree=3, arm_length=3, max_label=100; obs_len is the longest obs: 69 (whole
path) or 70 (one step); action_len 16 (whole path) or 8 (one step).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import parse
from jarl.envs.base import TextEnv, register
from jarl.envs.codec import Codec, Tokens

Array = jax.Array


@flax.struct.dataclass
class PathStarState:
  labels_N: Array  # int32 [1 + degree * arm_length]: node 0 is the center, node 1 + a*L + k is step k+1 of arm a
  order_E: Array  # int32 [degree * arm_length]: the obs lists the edge into node order_E[e] + 1 e-th
  goal_arm: Array  # int32
  at: Array  # int32, the node the walker is at (one step per turn)
  first_ok: Array  # bool, the first move went down the goal's arm
  turn: Array  # int32, turns taken


@register("path_star")
class PathStar(TextEnv):

  def __init__(self, codec: Codec, degree: int = 3, arm_length: int = 3, max_label: int = 100,
               one_step_per_turn: bool = False, max_turns: int | None = None):
    D, L = degree, arm_length
    if D < 2 or L < 1 or max_label < 1 + D * L:
      raise ValueError("need degree >= 2, arm_length >= 1 and max_label >= 1 + degree * arm_length")
    self.degree, self.arm_length, self.max_label, self.one_step = D, L, max_label, one_step_per_turn
    self.digits = len(str(max_label - 1))
    node = np.arange(1, 1 + D * L)
    self.parent_N = np.concatenate([[0], np.where((node - 1) % L == 0, 0, node - 1)]).astype(np.int32)
    big = str(max_label - 1)
    tail = f" | at {big}, goal {big}" if one_step_per_turn else f" | path {big} to {big}"
    obs_len = D * L * (2 * len(big) + 2) - 1 + len(tail)
    action_len = len(big) + 6 if one_step_per_turn else (L + 1) * (len(big) + 1) + 4
    if not one_step_per_turn and max_turns not in (None, 1):
      raise ValueError("the whole-path mode has one turn; max_turns is for one_step_per_turn=True")
    max_turns = max_turns or (L + 2 if one_step_per_turn else 1)
    super().__init__(codec, obs_len=obs_len, action_len=action_len, max_turns=max_turns)
    self.instructions = ("Each turn, answer with the next node on the path to the goal, e.g. 17." if one_step_per_turn
                         else "Answer with the path from the start to the goal as node numbers, e.g. 5 17 8 42.")
    words = dict(arrow=">", space=" ", start=" | at " if one_step_per_turn else " | path ",
                 goal=", goal " if one_step_per_turn else " to ")
    self._words = {k: codec.tokens(v, len(v)) for k, v in words.items()}
    self._whole_verdict = codec.piece_table(["invalid", "wrong", "correct"])
    self._digit_ids = codec.piece_table([str(d) for d in range(10)]).ids[:, 0]
    self._step_prefix = codec.piece_table(["no edge, at ", "at "])
    self._step_suffix = codec.piece_table(["", ", goal reached", ", wrong arm"])

  def reset(self, key: Array) -> tuple[PathStarState, Tokens]:
    N, E = 1 + self.degree * self.arm_length, self.degree * self.arm_length
    u = jax.random.uniform(key, (self.max_label + E + 1,))  # one draw: labels, edge order, goal arm
    labels_N = jnp.argsort(u[:self.max_label])[:N].astype(jnp.int32)
    order_E = jnp.argsort(u[self.max_label:-1]).astype(jnp.int32)
    goal_arm = jnp.minimum((u[-1] * self.degree).astype(jnp.int32), self.degree - 1)
    state = PathStarState(labels_N, order_E, goal_arm, jnp.int32(0), jnp.bool_(False), jnp.int32(0))
    W = self._words
    obs = self.codec.concat([self._edges(labels_N, order_E), W["start"], self._label(labels_N[0]), W["goal"],
                             self._label(labels_N[self._goal(goal_arm)])], self.obs_len)
    return state, obs

  def _edges(self, labels_N: Array, order_E: Array) -> Tokens:
    """The edge list "u>v u>v ..." in one vectorized pass (a digit, ">" and " " are one token each)."""
    child_E = order_E + 1
    E = child_E.shape[0]
    u_ExS, keep_u = self._digits_of(labels_N[jnp.asarray(self.parent_N)[child_E]])
    v_ExS, keep_v = self._digits_of(labels_N[child_E])
    arrow, space = (jnp.full((E, 1), t.ids[0]) for t in (self._words["arrow"], self._words["space"]))
    ids_ExS = jnp.concatenate([u_ExS, arrow, v_ExS, space], axis=1)
    keep_ExS = jnp.concatenate([keep_u, jnp.ones((E, 1), bool), keep_v, (jnp.arange(E) < E - 1)[:, None]], axis=1)
    at = jnp.where(keep_ExS, (jnp.cumsum(keep_ExS.ravel()) - 1).reshape(E, -1), ids_ExS.size)
    ids = jnp.full((ids_ExS.size,), self.codec.pad_id, jnp.int32).at[at].set(ids_ExS, mode="drop")
    return Tokens(ids, keep_ExS.sum().astype(jnp.int32))

  def _digits_of(self, labels_E: Array) -> tuple[Array, Array]:
    """Decimal digit tokens of each label, right-aligned in self.digits slots, and which slots are used."""
    powers = 10 ** jnp.arange(self.digits - 1, -1, -1)
    keep_ExS = (labels_E[:, None] >= powers) | (powers == 1)
    return self._digit_ids[(labels_E[:, None] // powers) % 10], keep_ExS

  def step(self, state: PathStarState, action: Tokens, key: Array):
    bytes_N, n = self.codec.to_bytes(action, 2 * self.action_len)
    return (self._step_one if self.one_step else self._step_whole)(state, bytes_N, n)

  def _step_whole(self, state, bytes_N, n):
    L = self.arm_length
    path_P, count, ok = parse.parse_ints(bytes_N, n, L + 1)
    node_P = self._node(state.labels_N, path_P)
    edge_P = (node_P > 0) & (jnp.asarray(self.parent_N)[node_P] == jnp.roll(node_P, 1))
    walk = ok & (count >= 2) & (node_P[0] == 0)
    valid = walk & jnp.all(edge_P[1:] | (jnp.arange(1, L + 1) >= count))
    success = valid & (count == L + 1) & (node_P[L] == self._goal(state.goal_arm))
    first_ok = walk & (node_P[1] == self._goal(state.goal_arm, 0))
    obs = self.codec.select(self._whole_verdict, valid.astype(jnp.int32) + success)
    info = dict(valid_action=valid, success=success, first_step_correct=first_ok)
    return (state.replace(first_ok=first_ok, turn=state.turn + 1), self.codec.concat([obs], self.obs_len),
            success.astype(jnp.float32),
            jnp.bool_(True), jnp.bool_(False), info)

  def _step_one(self, state, bytes_N, n):
    label_1, count, ok = parse.parse_ints(bytes_N, n, 1)
    node = self._node(state.labels_N, label_1)[0]
    legal = ok & (count == 1) & (node > 0) & (jnp.asarray(self.parent_N)[node] == state.at)
    at = jnp.where(legal, node, state.at)
    on_path = (at - 1) // self.arm_length == state.goal_arm
    first_ok = jnp.where(legal & (state.at == 0), on_path, state.first_ok)
    success = at == self._goal(state.goal_arm)
    lost = legal & ~on_path
    turn = state.turn + 1
    obs = self.codec.concat([self.codec.select(self._step_prefix, legal.astype(jnp.int32)),
                             self._label(state.labels_N[at]),
                             self.codec.select(self._step_suffix, jnp.where(success, 1, jnp.where(lost, 2, 0)))],
                            self.obs_len)
    terminated = success | lost
    info = dict(valid_action=legal, success=success, first_step_correct=first_ok)
    return (state.replace(at=at, first_ok=first_ok, turn=turn), obs, success.astype(jnp.float32), terminated,
            ~terminated & (turn >= self.max_turns), info)

  def _goal(self, goal_arm: Array, step: int | None = None) -> Array:
    """Node index of the goal (the arm's leaf), or of the arm's node `step` away from its start."""
    return 1 + goal_arm * self.arm_length + (self.arm_length - 1 if step is None else step)

  @staticmethod
  def _node(labels_N: Array, labels_P: Array) -> Array:
    """Node index of each label, -1 if no node has it."""
    same_PxN = labels_P[:, None] == labels_N[None, :]
    return jnp.where(same_PxN.any(1), jnp.argmax(same_PxN, 1), -1).astype(jnp.int32)

  def _label(self, label: Array) -> Tokens:
    return self.codec.number(label, self.digits)

  def expert_action(self, state: PathStarState) -> str:
    labels, L, goal_arm = np.asarray(state.labels_N), self.arm_length, int(state.goal_arm)
    path = [int(labels[0])] + [int(labels[1 + goal_arm * L + k]) for k in range(L)]
    if not self.one_step:
      return " ".join(map(str, path))
    at = int(state.at)
    return str(path[1] if at == 0 else int(labels[at + 1]))

  def expert_plan(self, state: PathStarState) -> str:
    """Whole-path mode: the path traced back from the goal, "42<8<17<5" (each step reads one edge "u>v")."""
    if self.one_step:
      return None
    return "<".join(reversed(self.expert_action(state).split()))

  def render(self, state: PathStarState) -> str:
    labels, L = np.asarray(state.labels_N).tolist(), self.arm_length
    arms = [">".join(map(str, [labels[0]] + labels[1 + a * L:1 + (a + 1) * L])) for a in range(self.degree)]
    arms[int(state.goal_arm)] += " (goal)"
    return f"arms: {'; '.join(arms)}; at {labels[int(state.at)]}, turn {int(state.turn)}/{self.max_turns}"
