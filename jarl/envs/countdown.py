"""Countdown: reach a target by combining the given numbers with + - * / and parentheses.

Task (made in the graph from the key): `n_numbers` numbers drawn from [1, max_number] and a
target in [1, max_target] computed by a random expression tree over all of them, so every task
is solvable (if none of 16 random trees lands in range, the target is the sum of the numbers).

    obs      "Numbers: 8 3 4 1. Target: 21."                      (first turn)
             "= 17, target 21" | "invalid, target 21" | "= 21, solved"   (feedback)
    action   "(8-3)*4+1"   (text after a "=" is ignored, so "(8-3)*4+1 = 21" is fine)

The verifier is exact integer arithmetic in the graph (one `lax.scan` over the action bytes
keeping a running sum and product per parenthesis level): digits, + - * /, parentheses and
spaces only; no unary minus; usual precedence, left to right; each given number used EXACTLY
once (as a multiset, like the Countdown game and TinyZero); every division exact (the game's
rule: all intermediate values are integers; negative ones are allowed).

Reward: 1 for a valid expression equal to the target (terminated, success); `format_reward`
(default 0) for a valid expression that misses; 0 for an invalid one. Retries continue with the
feedback obs until `max_turns`, then truncated.

Sizes (kwargs): n_numbers=4, max_number=10, max_target=100, max_turns=3, action_len=24;
obs_len is the longest possible obs (34 with the defaults). The host expert is a brute-force
solver over all expression trees.
"""

from __future__ import annotations

import itertools
import operator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import parse
from jarl.envs.base import TextEnv, register
from jarl.envs.codec import Codec, Tokens

show_if = Codec.show_if

Array = jax.Array

# Byte classes of the expression grammar; anything else makes the expression invalid.
SPACE, DIGIT, ADD, SUB, MUL, DIV, OPEN, CLOSE, STOP, BAD = range(10)
_CLASS_256 = np.full((256,), BAD, np.int32)
for _chars, _cls in [(" \t\n\r", SPACE), ("0123456789", DIGIT), ("+", ADD), ("-", SUB), ("*", MUL),
                     ("/", DIV), ("(", OPEN), (")", CLOSE), ("=", STOP)]:
  _CLASS_256[[ord(c) for c in _chars]] = _cls
N_CANDIDATES = 16


@flax.struct.dataclass
class CountdownState:
  numbers_N: Array  # int32 [n_numbers]
  target: Array  # int32
  turn: Array  # int32, turns taken


@flax.struct.dataclass
class _Parser:
  depth: Array  # current parenthesis level
  sum_D: Array  # per level: sum of the finished terms
  sign_D: Array  # per level: sign (+1/-1) of the current term
  term_D: Array  # per level: the current term's product so far
  mulop_D: Array  # per level: how the next operand joins the term (SPACE: it starts it, MUL, DIV)
  number: Array  # the number being read
  n_digits: Array  # its digits so far (0: not in a number)
  expect: Array  # an operand (number or "(") must come next
  used_U: Array  # numbers used, in order
  n_used: Array
  ok: Array
  stop: Array  # a "=" was seen: ignore the rest


def evaluate(bytes_N: Array, n: Array, max_numbers: int, max_digits: int, max_depth: int = 8):
  """Value of an arithmetic expression: (value int32, used numbers [max_numbers] int32, count, ok).

  `ok` is False on bad syntax, an inexact division or division by zero, more than
  max_numbers numbers, a number longer than max_digits, or parentheses nested deeper than
  max_depth - 1. Only the first n bytes are read, and nothing after a "=".
  """
  D, U = max_depth, max_numbers

  def operand(p, v):
    d = p.depth
    t, op = p.term_D[d], p.mulop_D[d]
    safe = jnp.where(v == 0, 1, v)
    term = jnp.where(op == MUL, t * v, jnp.where(op == DIV, t // safe, v))
    ok = p.ok & ((op != DIV) | ((v != 0) & (t % safe == 0)))
    return p.replace(term_D=p.term_D.at[d].set(term), expect=False, ok=ok)

  def level_value(p):
    return p.sum_D[p.depth] + p.sign_D[p.depth] * p.term_D[p.depth]

  def end_number(p):
    p = p.replace(used_U=p.used_U.at[jnp.minimum(p.n_used, U - 1)].set(p.number), n_used=p.n_used + 1,
                  n_digits=jnp.int32(0), ok=p.ok & (p.n_used < U))
    return operand(p, p.number)

  def digit(p, byte):
    return p.replace(number=jnp.where(p.n_digits == 0, 0, p.number) * 10 + (byte.astype(jnp.int32) - ord("0")),
                     n_digits=p.n_digits + 1, ok=p.ok & p.expect & (p.n_digits < max_digits))

  def add_sub(p, byte):
    d = p.depth
    sign = jnp.where(byte == ord("-"), -1, 1)
    return p.replace(sum_D=p.sum_D.at[d].set(level_value(p)), sign_D=p.sign_D.at[d].set(sign),
                     mulop_D=p.mulop_D.at[d].set(SPACE), expect=True, ok=p.ok & ~p.expect)

  def mul_div(p, byte):
    op = jnp.where(byte == ord("*"), MUL, DIV)
    return p.replace(mulop_D=p.mulop_D.at[p.depth].set(op), expect=True, ok=p.ok & ~p.expect)

  def open_paren(p, byte):
    d = jnp.minimum(p.depth + 1, D - 1)
    return p.replace(depth=d, sum_D=p.sum_D.at[d].set(0), sign_D=p.sign_D.at[d].set(1), term_D=p.term_D.at[d].set(0),
                     mulop_D=p.mulop_D.at[d].set(SPACE), ok=p.ok & p.expect & (p.depth + 1 < D))

  def close_paren(p, byte):
    v = level_value(p)
    p = p.replace(depth=jnp.maximum(p.depth - 1, 0), ok=p.ok & ~p.expect & (p.depth > 0))
    return operand(p, v)

  branches = [lambda p, b: p, digit, add_sub, add_sub, mul_div, mul_div, open_paren, close_paren,
              lambda p, b: p.replace(stop=jnp.bool_(True)), lambda p, b: p.replace(ok=jnp.bool_(False))]

  def read(p, x):
    byte, is_live = x
    cls = jnp.where(is_live & ~p.stop, jnp.asarray(_CLASS_256)[byte], SPACE)
    p = jax.tree.map(lambda a, b: jnp.where((p.n_digits > 0) & (cls != DIGIT), a, b), end_number(p), p)
    return jax.lax.switch(cls, branches, p, byte), None

  zeros_D = jnp.zeros((D,), jnp.int32)
  init = _Parser(jnp.int32(0), zeros_D, jnp.ones((D,), jnp.int32), zeros_D, zeros_D + SPACE, jnp.int32(0),
                 jnp.int32(0), jnp.bool_(True), jnp.zeros((U,), jnp.int32), jnp.int32(0), jnp.bool_(True),
                 jnp.bool_(False))
  # A trailing space ends a number that runs to the end of the buffer.
  bytes_ext = jnp.concatenate([bytes_N, jnp.zeros((1,), jnp.uint8)])
  live_ext = jnp.concatenate([parse.live(bytes_N, n), jnp.zeros((1,), bool)])
  p, _ = jax.lax.scan(read, init, (bytes_ext, live_ext))
  ok = p.ok & ~p.expect & (p.depth == 0)
  return level_value(p), p.used_U, jnp.minimum(p.n_used, U), ok


def uses_exactly(used_U: Array, n_used: Array, numbers_U: Array) -> Array:
  """The used numbers are the given ones, each exactly once (as multisets)."""
  return (n_used == numbers_U.shape[0]) & jnp.all(jnp.sort(used_U) == jnp.sort(numbers_U))


def _random_tree_values(u_CxRxN: Array, numbers_N: Array) -> tuple[Array, Array]:
  """Values of C random expression trees over all the numbers: (values [C], ok [C]: integer all the way).

  Round r joins two live values (picked, in order, by the uniforms u[:, r, :N]) with the op
  picked by u[:, r, N]; there are N-1 rounds.
  """
  C, N = u_CxRxN.shape[0], numbers_N.shape[0]
  values_CxN = jnp.broadcast_to(numbers_N, (C, N))
  alive_CxN, ok_C, rows = jnp.ones((C, N), bool), jnp.ones((C,), bool), jnp.arange(C)
  for r in range(N - 1):
    i, j = jnp.argsort(u_CxRxN[:, r, :N] + 2.0 * ~alive_CxN, axis=1)[:, :2].T
    a, b = values_CxN[rows, i], values_CxN[rows, j]
    safe = jnp.where(b == 0, 1, b)
    op = jnp.minimum((u_CxRxN[:, r, N] * 4).astype(jnp.int32), 3)
    out = jnp.stack([a + b, a - b, a * b, a // safe])[op, rows]
    ok_C &= (op != 3) | ((b != 0) & (a % safe == 0))
    values_CxN, alive_CxN = values_CxN.at[rows, i].set(out), alive_CxN.at[rows, j].set(False)
  return jnp.sum(jnp.where(alive_CxN, values_CxN, 0), axis=1), ok_C


@register("countdown")
class Countdown(TextEnv):
  instructions = ("Write one arithmetic expression with + - * / and parentheses that uses each given "
                  "number exactly once and equals the target, e.g. (8-3)*4+1.")

  def __init__(self, codec: Codec, n_numbers: int = 4, max_number: int = 10, max_target: int = 100,
               max_turns: int = 3, action_len: int = 24, format_reward: float = 0.0):
    if not 2 <= n_numbers <= 6 or max_target < n_numbers * max_number or (max_number + 1) ** n_numbers >= 2 ** 31:
      raise ValueError("need 2 <= n_numbers <= 6, max_target >= n_numbers * max_number and no int32 overflow")
    self.n_numbers, self.max_number, self.max_target = n_numbers, max_number, max_target
    self.format_reward = float(format_reward)
    self.value_digits = len(str((max_number + 1) ** n_numbers))
    first = f"Numbers: {' '.join([str(max_number)] * n_numbers)}. Target: {max_target}."
    feedback = f"= -{'9' * self.value_digits}, target {max_target}"
    super().__init__(codec, obs_len=max(len(first), len(feedback)), action_len=action_len, max_turns=max_turns)
    self._pieces = {k: codec.tokens(v, len(v)) for k, v in dict(
        numbers="Numbers: ", target=". Target: ", dot=".", space=" ", eq="= ", minus="-", invalid="invalid",
        comma_target=", target ", solved=", solved").items()}

  def reset(self, key: Array) -> tuple[CountdownState, Tokens]:
    N = self.n_numbers  # one random draw (threefry is slow to compile): the numbers, then the trees
    u = jax.random.uniform(key, (N + N_CANDIDATES * (N - 1) * (N + 1),))
    numbers_N = jnp.minimum((u[:N] * self.max_number).astype(jnp.int32), self.max_number - 1) + 1
    values_C, ok_C = _random_tree_values(u[N:].reshape(N_CANDIDATES, N - 1, N + 1), numbers_N)
    ok_C &= (values_C >= 1) & (values_C <= self.max_target)
    target = jnp.where(ok_C.any(), values_C[jnp.argmax(ok_C)], numbers_N.sum())
    state = CountdownState(numbers_N.astype(jnp.int32), target.astype(jnp.int32), jnp.int32(0))
    P, digits = self._pieces, len(str(self.max_target))
    pieces = [P["numbers"]]
    for i in range(self.n_numbers):
      pieces += [self.codec.number(numbers_N[i], digits)] + ([P["space"]] if i < self.n_numbers - 1 else [])
    pieces += [P["target"], self.codec.number(target, digits), P["dot"]]
    return state, self.codec.concat(pieces, self.obs_len)

  def step(self, state: CountdownState, action: Tokens, key: Array):
    bytes_N, n = self.codec.to_bytes(action, 2 * self.action_len)
    value, used_U, n_used, ok = evaluate(bytes_N, n, self.n_numbers, len(str(self.max_number)))
    valid = ok & uses_exactly(used_U, n_used, state.numbers_N)
    solved = valid & (value == state.target)
    reward = jnp.where(solved, 1.0, jnp.where(valid, self.format_reward, 0.0)).astype(jnp.float32)
    turn = state.turn + 1
    P, digits = self._pieces, len(str(self.max_target))
    obs = self.codec.concat([
        show_if(P["invalid"], ~valid), show_if(P["eq"], valid), show_if(P["minus"], valid & (value < 0)),
        show_if(self.codec.number(jnp.abs(value), self.value_digits), valid), show_if(P["solved"], solved),
        show_if(P["comma_target"], ~solved), show_if(self.codec.number(state.target, digits), ~solved)], self.obs_len)
    info = dict(valid_action=valid, success=solved, value=jnp.where(valid, value, 0))
    return state.replace(turn=turn), obs, reward, solved, ~solved & (turn >= self.max_turns), info

  def expert_action(self, state: CountdownState) -> str:
    return solve(np.asarray(state.numbers_N).tolist(), int(state.target)) or ""

  def render(self, state: CountdownState) -> str:
    numbers = " ".join(map(str, np.asarray(state.numbers_N).tolist()))
    return f"numbers {numbers} -> target {int(state.target)} (turn {int(state.turn)}/{self.max_turns})"


def solve(numbers: list[int], target: int) -> str | None:
  """Host side: an expression using every number once that equals target (None if there is none)."""
  prec = {"+": 1, "-": 1, "*": 2, "/": 2}
  apply = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}

  def join(a, op, b):  # items are (value, text, precedence); parenthesise only where needed
    left = a[1] if a[2] >= prec[op] else f"({a[1]})"
    right = b[1] if b[2] > prec[op] or (b[2] == prec[op] and op in "+*") else f"({b[1]})"
    return apply[op](a[0], b[0]), f"{left}{op}{right}", prec[op]

  def search(items):
    if len(items) == 1:
      return items[0][1] if items[0][0] == target else None
    for i, j in itertools.permutations(range(len(items)), 2):
      rest = [x for k, x in enumerate(items) if k not in (i, j)]
      for op in "+-*/":
        if op == "/" and (items[j][0] == 0 or items[i][0] % items[j][0]):
          continue
        found = search(rest + [join(items[i], op, items[j])])
        if found is not None:
          return found
    return None

  return search([(v, str(v), 3) for v in numbers])
