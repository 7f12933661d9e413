"""Tree search over a turn's ACT candidates: Gumbel MuZero (mctx) with the env as the simulator.

    agent = AgentConfig(act_candidates=4, candidate_score="search", search_simulations=64)

The policy samples K candidate actions for the turn (`jarl.planning.BestOfK`); the search
then plans over sequences of those K texts: a node is an env state, its K children are the
states the pure in-graph `env.step` reaches with each candidate, the edge reward is the env's
reward, and a terminated or truncated episode is a leaf (discount 0). Gumbel MuZero (Danihelka
et al. 2022, "Policy improvement by planning with Gumbel"; `mctx.gumbel_muzero_policy`) spends
`search_simulations` simulations, sequential halving at the root and the deterministic
Gumbel-MuZero rule below it, to depth `search_depth` (None: the env's max_turns).

Priors: the policy's log-likelihood of each candidate text (its sampled tokens' raw
log-probs, stop token included), used at every node: the K texts are the action set of
the whole tree, a simplification that suits envs whose actions mean the same in every state
(moves, pulls, guesses). Leaf values are 0 (no value head needed); the env's rewards along a
path are the return. The score of candidate k is the search's improved policy at the root,
softmax(prior + sigma(completed Q)) (`action_weights`); best-of-K acts on the highest, so
training on the chosen candidates distils the search into the policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mctx

from jarl.envs.codec import Tokens

Array = jax.Array


def gumbel_muzero_scores(env, state, actions: Tokens, prior_logits_BxK: Array, key: Array, extra: dict,
                         simulations: int, depth: int | None, gumbel_scale: float = 0.0) -> Array:
  """The root's improved policy [B, K] over the K candidate actions (`actions`: [K, B, action_len]).

  `state`: the turn's env state per row; `extra`: env.step keyword arguments (the PLAN text).
  gumbel_scale=0 makes the search deterministic given the candidates (they are sampled already).
  """
  K, B = actions.ids.shape[:2]
  rows_B = jnp.arange(B)
  step = jax.vmap(lambda s, a, k, **kw: env.step(s, a, k, **kw))
  zeros_B = jnp.zeros((B,), jnp.float32)

  def recurrent_fn(params, rng, action_B, embedding):
    del params
    state, done_B = embedding
    action = Tokens(actions.ids[action_B, rows_B], actions.length[action_B, rows_B])
    new_state, _, reward_B, term_B, trunc_B, _ = step(state, action, jax.random.split(rng, B), **extra)
    now_done_B = done_B | term_B | trunc_B
    keep = lambda old, new: jnp.where(done_B.reshape((B,) + (1,) * (new.ndim - 1)), old, new)  # noqa: E731
    out = mctx.RecurrentFnOutput(reward=jnp.where(done_B, 0.0, reward_B).astype(jnp.float32),
                                 discount=jnp.where(now_done_B, 0.0, 1.0), prior_logits=prior_logits_BxK,
                                 value=zeros_B)
    return out, (jax.tree.map(keep, state, new_state), now_done_B)

  root = mctx.RootFnOutput(prior_logits=prior_logits_BxK, value=zeros_B, embedding=(state, jnp.zeros((B,), bool)))
  out = mctx.gumbel_muzero_policy(params=(), rng_key=key, root=root, recurrent_fn=recurrent_fn,
                                  num_simulations=simulations, max_depth=depth or env.max_turns,
                                  max_num_considered_actions=K, gumbel_scale=gumbel_scale)
  return out.action_weights
