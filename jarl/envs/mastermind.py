"""Mastermind: find a secret code from exact / near feedback over several guesses.

Task (made in the graph from the key): a secret of `length` symbols, each a digit in
1..`colors` drawn uniformly (repeats allowed, as in the board game). Each turn the agent
guesses a code; the feedback counts the symbols in the right place (exact) and the other
symbols that occur in the secret, matched at most once each (near).

    obs      "guess 4 digits from 1-6"                    (first turn)
             "1234: 2 exact, 1 near" | "invalid guess"    (feedback)
    action   "1234"   (exactly `length` digits in 1..colors; spaces and commas between are ok)

An invalid guess (wrong length, other symbols) still uses the turn, with
info["valid_action"] False. Reward: 1 for the secret (terminated, success), 0 otherwise;
truncated after `max_turns`. info also holds the feedback counts `exact` and `near` (0 for an
invalid guess).

Sizes (kwargs): length=4, colors=6, max_turns=8, action_len=16; obs_len is the longest
possible obs (23 with the defaults). The state keeps the valid guesses and their feedback for
the host expert: Knuth's opening (1122), then the consistent code whose largest feedback class
among the consistent codes is smallest. It solves every one of the 1296 secrets of 4 over 6
within 6 guesses (checked once; the tests check a sample).
"""

from __future__ import annotations

import functools
import itertools

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
class MastermindState:
  secret_L: Array  # int32, symbols 0..colors-1 (shown as 1..colors)
  guesses_TxL: Array  # int32, the valid guesses so far (rows past n_guesses are 0)
  feedback_Tx2: Array  # int32, (exact, near) per valid guess
  n_guesses: Array  # int32
  turn: Array  # int32, turns taken


def feedback(guess_L: Array, secret_L: Array, colors: int) -> tuple[Array, Array]:
  """(exact, near) counts of a guess against the secret."""
  exact = jnp.sum(guess_L == secret_L)
  common = jnp.minimum(jax.nn.one_hot(guess_L, colors).sum(0), jax.nn.one_hot(secret_L, colors).sum(0)).sum()
  return exact.astype(jnp.int32), (common - exact).astype(jnp.int32)


@register("mastermind")
class Mastermind(TextEnv):

  def __init__(self, codec: Codec, length: int = 4, colors: int = 6, max_turns: int = 8, action_len: int = 16):
    if not 1 <= length <= 9 or not 2 <= colors <= 9:
      raise ValueError(f"need 1 <= length <= 9 and 2 <= colors <= 9, got {length}, {colors}")
    self.length, self.colors = length, colors
    example = "".join(str(i % colors + 1) for i in range(length))
    self.instructions = f"Find the secret code of {length} digits from 1-{colors}. Answer with a guess, e.g. {example}."
    texts = dict(start=f"guess {length} digits from 1-{colors}", invalid="invalid guess", colon=": ",
                 exact=" exact, ", near=" near")
    self.pieces = {k: codec.tokens(v, len(codec.encode(v))) for k, v in texts.items()}
    self.symbols = codec.piece_table([str(c + 1) for c in range(colors)])
    P = self.pieces
    feedback_len = (length * self.symbols.size + P["colon"].size + P["exact"].size + P["near"].size
                    + 2 * codec.number(0, 1).size)
    obs_len = max(P["start"].size, P["invalid"].size, feedback_len)
    super().__init__(codec, obs_len=obs_len, action_len=action_len, max_turns=max_turns)

  def reset(self, key: Array) -> tuple[MastermindState, Tokens]:
    secret = jax.random.randint(key, (self.length,), 0, self.colors)
    T, L = self.max_turns, self.length
    state = MastermindState(secret, jnp.zeros((T, L), jnp.int32), jnp.zeros((T, 2), jnp.int32), jnp.int32(0),
                            jnp.int32(0))
    return state, self.codec.concat([self.pieces["start"]], self.obs_len)

  def parse_guess(self, action: Tokens) -> tuple[Array, Array]:
    """(guess [length] int32 in 0..colors-1, valid): `length` digits in 1..colors, maybe split by spaces/commas."""
    bytes_N, n = self.codec.to_bytes(action, 4 * action.size)
    solid_N = parse.live(bytes_N, n) & ~parse.is_space(bytes_N) & (bytes_N != ord(","))
    symbol_N = bytes_N.astype(jnp.int32) - ord("1")
    valid = jnp.all(~solid_N | ((symbol_N >= 0) & (symbol_N < self.colors))) & (solid_N.sum() == self.length)
    slot_N = jnp.where(solid_N, jnp.cumsum(solid_N) - 1, self.length)
    return jnp.zeros((self.length,), jnp.int32).at[slot_N].set(symbol_N, mode="drop"), valid

  def step(self, state: MastermindState, action: Tokens, key: Array):
    guess, valid = self.parse_guess(action)
    exact, near = feedback(guess, state.secret_L, self.colors)
    exact, near = jnp.where(valid, exact, 0), jnp.where(valid, near, 0)
    solved = valid & (exact == self.length)
    row = jnp.where(valid, jnp.minimum(state.n_guesses, self.max_turns - 1), self.max_turns)
    state = state.replace(guesses_TxL=state.guesses_TxL.at[row].set(guess, mode="drop"),
                          feedback_Tx2=state.feedback_Tx2.at[row].set(jnp.stack([exact, near]), mode="drop"),
                          n_guesses=state.n_guesses + valid, turn=state.turn + 1)
    P, number = self.pieces, lambda x: self.codec.number(x, 1)
    feedback_pieces = ([self.codec.select(self.symbols, g) for g in guess]
                       + [P["colon"], number(exact), P["exact"], number(near), P["near"]])
    obs = self.codec.concat([show_if(P["invalid"], ~valid)] + [show_if(p, valid) for p in feedback_pieces], self.obs_len)
    info = dict(valid_action=valid, success=solved, exact=exact, near=near)
    truncated = ~solved & (state.turn >= self.max_turns)
    return state, obs, solved.astype(jnp.float32), solved, truncated, info

  def expert_action(self, state: MastermindState) -> str:
    n = int(state.n_guesses)
    history = list(zip(np.asarray(state.guesses_TxL)[:n], map(tuple, np.asarray(state.feedback_Tx2)[:n].tolist())))
    return "".join(str(s + 1) for s in solve_step(history, self.length, self.colors))

  def render(self, state: MastermindState) -> str:
    lines = [f"{''.join(str(s + 1) for s in g)}: {e} exact, {m} near"
             for g, (e, m) in zip(np.asarray(state.guesses_TxL)[:int(state.n_guesses)], np.asarray(state.feedback_Tx2))]
    secret = "".join(str(s + 1) for s in np.asarray(state.secret_L))
    return "\n".join(lines + [f"secret {secret} (turn {int(state.turn)}/{self.max_turns})"])


def host_feedback(codes_NxL: np.ndarray, guess_L: np.ndarray, colors: int) -> tuple[np.ndarray, np.ndarray]:
  """Host side: (exact, near) of one guess against many codes."""
  exact = (codes_NxL == guess_L).sum(1)
  counts_NxC = (codes_NxL[:, :, None] == np.arange(colors)).sum(1)
  common = np.minimum(counts_NxC, np.bincount(guess_L, minlength=colors)).sum(1)
  return exact, common - exact


@functools.lru_cache(maxsize=8)
def all_codes(length: int, colors: int) -> np.ndarray:
  """Host side: every code, [colors ** length, length]."""
  return np.array(list(itertools.product(range(colors), repeat=length)), np.int64)


def solve_step(history: list[tuple[np.ndarray, tuple[int, int]]], length: int, colors: int,
               max_scored: int = 400) -> np.ndarray:
  """Host side: the next guess (symbols 0..colors-1) given the (guess, (exact, near)) history.

  Knuth's opening (first half 0s, second half 1s), then among the codes consistent with the
  history the one whose largest feedback class is smallest (the first consistent code when
  more than max_scored remain).
  """
  if not history:
    return np.array([0] * (length // 2) + [1] * (length - length // 2))
  codes = all_codes(length, colors)
  for guess, (exact, near) in history:
    e, m = host_feedback(codes, np.asarray(guess), colors)
    codes = codes[(e == exact) & (m == near)]
  if len(codes) == 1 or len(codes) > max_scored:
    return codes[0]
  worst = [np.bincount(np.dot(np.stack(host_feedback(codes, g, colors), 1), [length + 1, 1])).max() for g in codes]
  return codes[int(np.argmin(worst))]
