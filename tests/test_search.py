"""Gumbel MuZero tree search over ACT candidates (jarl.search, candidate_score="search")."""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl import models, search
from jarl.agent import AgentConfig
from jarl.envs import TextEnv, Tokens, make, parse, register
from jarl.forward import replay_logprobs
from jarl.rollout import make_collect


@flax.struct.dataclass
class LineState:
  pos: jax.Array
  turn: jax.Array


@register("walk_line")
class WalkLine(TextEnv):
  """Walk on a line from 0 to the goal at +2: "r" (+1), "l" (-1), "s" (stay); reward 1 at the goal."""

  instructions = "Walk right twice."

  def __init__(self, codec, max_turns: int = 4):
    super().__init__(codec, obs_len=4, action_len=2, max_turns=max_turns)
    self.moves = parse.byte_table(["l", "s", "r"])

  def reset(self, key):
    return LineState(jnp.int32(0), jnp.int32(0)), self.codec.tokens("go", self.obs_len)

  def step(self, state, action, key):
    move = parse.match_choice(*self.codec.to_bytes(action, 4), *self.moves)
    pos = state.pos + jnp.where(move >= 0, move - 1, 0)
    turn = state.turn + 1
    success = pos == 2
    info = dict(valid_action=move >= 0, success=success)
    return (LineState(pos, turn), self.codec.tokens("go", self.obs_len), success.astype(jnp.float32), success,
            ~success & (turn >= self.max_turns), info)

  def expert_action(self, state) -> str:
    return "r"

  def render(self, state) -> str:
    return f"pos={int(state.pos)}"


ENV = make("walk_line")


def _candidates(texts_KxB):
  actions = [[ENV.action_tokens(t) for t in row] for row in texts_KxB]
  return Tokens(jnp.asarray([[a.ids for a in row] for row in actions]), jnp.asarray([[a.length for a in row]
                                                                                       for row in actions]))


def test_search_finds_the_move_that_pays_two_steps_ahead():
  """One step of lookahead sees no reward for any move (the goal is 2 away); the search does."""
  texts = [["l", "r"], ["s", "l"], ["r", "s"]]  # [K=3, B=2]: "r" is candidate 2 in row 0, 0 in row 1
  state = jax.vmap(lambda k: ENV.reset(k)[0])(jax.random.split(jax.random.key(0), 2))
  one_step = jax.vmap(ENV.step)(state, jax.tree.map(lambda x: x[2], _candidates(texts)), jax.random.split(
      jax.random.key(1), 2))[2]
  assert (np.asarray(one_step) == 0).all()
  prior = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # the policy prefers a wrong move in both rows
  scores = jax.jit(lambda s, a, p: search.gumbel_muzero_scores(ENV, s, a, p, jax.random.key(2), {}, 32, None))(
      state, _candidates(texts), prior)
  scores = np.asarray(scores)
  np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
  assert scores.argmax(1).tolist() == [2, 0]


def test_search_in_the_rollout_acts_on_the_best_candidate_and_replays():
  cfg = models.ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
  lm = models.create(cfg, seed=0)
  moves = jnp.asarray([ord(c) for c in "lsr"])

  def choose(logits_BxV, key):  # a random move (the 1-token ACT budget leaves no room for the stop token)
    return moves[jax.random.randint(key, logits_BxV.shape[:1], 0, 3)]

  agent = AgentConfig(act_budget=1, act_candidates=3, candidate_score="search", search_simulations=64, system="")
  traj = jax.device_get(make_collect(lm, ENV, agent, n_tasks=32, group_size=1, choose=choose)(lm.params,
                                                                                            jax.random.key(4)))
  p, live = traj.planning, traj.turn_live
  np.testing.assert_allclose(p["scores"].sum(-1)[live], 1.0, atol=1e-5)
  np.testing.assert_array_equal(p["chosen"][live], p["scores"].argmax(-1)[live])
  assert (p["chosen"][live] != 0).any(), "search should change some actions"
  plain = jax.device_get(make_collect(lm, ENV, AgentConfig(act_budget=1, system=""), n_tasks=32, group_size=1,
                                      choose=choose)(lm.params, jax.random.key(4)))
  assert traj.episode["success"].mean() > plain.episode["success"].mean() + 0.25, (
      traj.episode["success"].mean(), plain.episode["success"].mean())
  replayed = replay_logprobs(lm, lm.params, traj)
  np.testing.assert_allclose(np.asarray(replayed), traj.logprob, atol=1e-4)
  with pytest.raises(ValueError, match="search_simulations"):
    AgentConfig(candidate_score="search", search_simulations=0)
