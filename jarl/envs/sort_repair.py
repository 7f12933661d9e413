"""Sort repair: sort a short list of numbers, then repair the answer from the feedback.

The home ground for self-critique: checking a sorted list (is it ordered? the same numbers?)
is easier than producing it, the env's verdict is exact and exposed every step as
info["correct"], and the feedback names the first wrong position so a revision can be local.
(Subset-sum was the alternative; its verdict is just as checkable, but a wrong answer gives no
local repair signal and its tasks need a solver to be sure they are solvable.)

    obs      "Sort: 42 7 19 88 3"                                   (first turn)
             "wrong at 3" | "invalid, need 5 numbers" | "correct"    (feedback)
    action   "3 7 19 42 88"   (any non-digits separate the numbers: "3, 7, 19, 42, 88" works too)

The task: `n` numbers drawn uniformly from [0, max_value) (repeats allowed). An action is
valid when it parses to exactly n numbers; it is correct when it equals the sorted list;
"wrong at k" gives the first (1-based) position that differs from the sorted list.

Reward: 1 for a correct answer (terminated, success), else 0. Wrong or invalid answers get
the feedback and another turn until `max_turns`, then truncated.
info: valid_action, success, correct (the verdict a critic should give), first_wrong
(1-based, 0 when correct or invalid).

Sizes (kwargs): n=5, max_value=100, max_turns=3; obs_len 23 (the longest obs), action_len
n * (digits + 2) + 4 = 24.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import parse
from jarl.envs.base import TextEnv, register
from jarl.envs.codec import Codec, Tokens

show_if = Codec.show_if

Array = jax.Array


@flax.struct.dataclass
class SortState:
  values_N: Array  # int32 [n], the list to sort
  turn: Array  # int32, turns taken


@register("sort_repair")
class SortRepair(TextEnv):
  instructions = "Answer with the numbers sorted from smallest to largest, separated by spaces."

  def __init__(self, codec: Codec, n: int = 5, max_value: int = 100, max_turns: int = 3):
    if n < 2 or max_value < 2:
      raise ValueError("need n >= 2 and max_value >= 2")
    self.n, self.max_value = n, max_value
    self.digits = len(str(max_value - 1))
    first = "Sort: " + " ".join([str(max_value - 1)] * n)
    need = f"invalid, need {n} numbers"
    super().__init__(codec, obs_len=max(len(first), len(need)), action_len=n * (self.digits + 2) + 4,
                     max_turns=max_turns)
    self._sort, self._space, self._wrong_at = (codec.tokens(t, len(t)) for t in ("Sort: ", " ", "wrong at "))
    self._verdict = codec.piece_table(["", need, "correct"])  # by verdict: wrong / invalid / correct

  def reset(self, key: Array) -> tuple[SortState, Tokens]:
    values_N = jax.random.randint(key, (self.n,), 0, self.max_value)
    pieces = [self._sort]
    for i in range(self.n):
      pieces += [self.codec.number(values_N[i], self.digits)] + ([self._space] if i < self.n - 1 else [])
    return SortState(values_N.astype(jnp.int32), jnp.int32(0)), self.codec.concat(pieces, self.obs_len)

  def step(self, state: SortState, action: Tokens, key: Array):
    bytes_N, n_bytes = self.codec.to_bytes(action, 2 * self.action_len)
    answer_N, count, ok = parse.parse_ints(bytes_N, n_bytes, self.n)
    valid = ok & (count == self.n)
    wrong_N = answer_N != jnp.sort(state.values_N)
    correct, wrong = valid & ~wrong_N.any(), valid & wrong_N.any()
    first_wrong = jnp.where(wrong, jnp.argmax(wrong_N) + 1, 0).astype(jnp.int32)
    turn = state.turn + 1
    verdict = self.codec.select(self._verdict, jnp.where(correct, 2, jnp.where(valid, 0, 1)))
    where = self.codec.number(first_wrong, len(str(self.n)))
    obs = self.codec.concat([verdict, show_if(self._wrong_at, wrong), show_if(where, wrong)], self.obs_len)
    info = dict(valid_action=valid, success=correct, correct=correct, first_wrong=first_wrong)
    return (state.replace(turn=turn), obs, correct.astype(jnp.float32), correct,
            ~correct & (turn >= self.max_turns), info)

  def expert_action(self, state: SortState) -> str:
    return " ".join(map(str, sorted(np.asarray(state.values_N).tolist())))

  def render(self, state: SortState) -> str:
    values = np.asarray(state.values_N).tolist()
    return f"sort {values} -> {sorted(values)} (turn {int(state.turn)}/{self.max_turns})"
