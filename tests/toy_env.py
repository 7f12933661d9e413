"""A tiny deterministic env for rollout and learner tests: guess a secret digit."""

import flax.struct
import jax
import jax.numpy as jnp

from jarl.envs import TextEnv, Tokens, parse, register


@flax.struct.dataclass
class GuessState:
  secret: jax.Array
  turn: jax.Array


@register("guess_digit")
class GuessDigit(TextEnv):
  """Obs: "start" / "higher" / "lower" / "invalid"; action: one digit; reward 1 when right."""

  instructions = "Guess the digit."
  FEEDBACK = ("start", "higher", "lower", "correct", "invalid")

  def __init__(self, codec, max_turns: int = 3):
    super().__init__(codec, obs_len=8, action_len=3, max_turns=max_turns)
    self.feedback = codec.piece_table(self.FEEDBACK)
    self.digits = parse.byte_table([str(d) for d in range(10)])

  def _obs(self, i) -> Tokens:
    return self.codec.concat([self.codec.select(self.feedback, i)], self.obs_len)

  def reset(self, key):
    return GuessState(jax.random.randint(key, (), 0, 10), jnp.int32(0)), self._obs(0)

  def step(self, state, action, key):
    guess = parse.match_choice(*self.codec.to_bytes(action, 8), *self.digits)
    valid, correct = guess >= 0, guess == state.secret
    feedback = jnp.where(~valid, 4, jnp.where(correct, 3, jnp.where(guess < state.secret, 1, 2)))
    turn = state.turn + 1
    truncated = ~correct & (turn >= self.max_turns)
    info = dict(valid_action=valid, success=correct)
    return (GuessState(state.secret, turn), self._obs(feedback), correct.astype(jnp.float32), correct,
            truncated, info)

  def expert_action(self, state) -> str:
    return str(int(state.secret))

  def render(self, state) -> str:
    return f"secret={int(state.secret)} turn={int(state.turn)}"
