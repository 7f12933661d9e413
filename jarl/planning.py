"""Value-guided best-of-K over ACT candidates, inside the rollout graph.

    agent = AgentConfig(act_candidates=4, candidate_score="env")   # or "value": the value head

Each turn the ACT header is forced once, then K candidates are sampled one after another
from the same context into K slot ranges of the ACT budget (`Layout.sampled_slots`). Once
sampled, a candidate's slots are hidden from later tokens and every row's cursor is restored
(`slots.hide_slots`), so each candidate sees only the context and starts at the same
position. A registered scorer rates each candidate; per row the best one (ties: the first)
is brought back (`slots.keep_slots`) and the other ranges become idle slots. The buffers
then read exactly as if the policy had sampled the chosen text alone: one forward over them
reproduces the log-prob of every kept token, and CRITIQUE, VERDICT, REVISE and the env step
all see the chosen text.

Scorers (`register_scorer`): `score_B = scorer(scene, candidate)`, higher is better.
  "env"    reward + success of stepping the env from the turn's state with the candidate:
           one step of lookahead with the true simulator, using the key the real step uses
           (in-graph envs only: a host env has no pure step)
  "value"  the value head at the candidate's last token (a 'policy_value' model)
A joint scorer (`joint=True`) rates all K candidates at once, after they are sampled:
`scores_BxK = scorer(scene, candidates [K, B, ...], logprob_BxK, agent)`.
  "search" Gumbel MuZero tree search over sequences of the K candidates with the env as the
           simulator (`jarl.search`; AgentConfig.search_simulations, .search_depth)

Candidate 1 draws with the turn's ACT key, exactly the action a K = 1 rollout samples;
candidate k > 1 draws with fold_in(key, k), from `candidate_sampling` when given (a greedy
evaluation then searches over sampled alternatives to its greedy answer).

Training on best-of-K trajectories is search distillation: the chosen candidates are the only
ACT tokens under loss_mask, and their recorded log-probs are the policy's own log-probs of the
chosen text (not the probability that search picks it), so PPO's importance ratio compares the
policy with itself at sampling time and starts at 1. The update moves the policy towards what
search preferred; the clip bounds each step. Per turn, `Trajectory.planning` records `chosen`,
`best_score` and `scores` [B, N, K]; `metrics` summarises them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jarl import search
from jarl.agent import Layout, Segment
from jarl.envs.base import TextEnv
from jarl.envs.codec import Tokens
from jarl.models import LM
from jarl.slots import Carry, cursor, hide_slots, keep_slots, where

Array = jax.Array


class Scene(NamedTuple):
  """What a scorer may read about the turn (B rows)."""
  lm: LM
  params: Any
  env: Any  # the TextEnv (on the host path only its shape: no step)
  state: Any  # the turn's env state per row (None on the host path)
  env_keys_B: Array  # the keys the turn's real env step uses
  extra: dict  # env.step keyword arguments (the PLAN text, for envs that read it)


class Candidate(NamedTuple):
  text: Tokens  # [B, budget] the sampled ACT text (stop token excluded)
  action: Tokens  # [B, action_len] as the env reads it
  hidden_BxD: Array  # final hidden state at its last token


_SCORERS: dict[str, Callable] = {}


def register_scorer(name: str, *, needs_env: bool = False, needs_value: bool = False, joint: bool = False) -> Callable:
  """Decorator: `@register_scorer("env", needs_env=True)` makes a scorer available as
  `AgentConfig.candidate_score`. needs_env: it steps the in-graph env; needs_value: a value head;
  joint: it rates all K candidates at once (see the module docstring)."""
  def add(fn):
    if name in _SCORERS:
      raise ValueError(f"candidate scorer {name!r} is already registered")
    fn.needs_env, fn.needs_value, fn.joint = needs_env, needs_value, joint
    _SCORERS[name] = fn
    return fn
  return add


def get_scorer(name: str) -> Callable:
  if name not in _SCORERS:
    raise ValueError(f"unknown candidate_score {name!r}; available: {sorted(_SCORERS)}")
  return _SCORERS[name]


@register_scorer("env", needs_env=True)
def env_lookahead(scene: Scene, cand: Candidate) -> Array:
  """reward + success of the env stepped from the turn's state with the candidate."""
  if scene.state is None:
    raise ValueError("candidate_score='env' needs the turn's env state: Runner.policy(..., env_state=state)")
  step = jax.vmap(lambda s, a, k, **kw: scene.env.step(s, a, k, **kw))
  _, _, reward_B, _, _, info = step(scene.state, cand.action, scene.env_keys_B, **scene.extra)
  return reward_B + info["success"]


@register_scorer("value", needs_value=True)
def value_estimate(scene: Scene, cand: Candidate) -> Array:
  """The value head's estimate after the candidate's last token."""
  return scene.lm.apply(scene.params, cand.hidden_BxD[:, None], method="value")[:, 0]


@register_scorer("search", needs_env=True, joint=True)
def tree_search(scene: Scene, cands: Candidate, logprob_BxK: Array, agent) -> Array:
  """Gumbel MuZero's improved policy at the root over the K candidates (`jarl.search`)."""
  if scene.state is None:
    raise ValueError("candidate_score='search' needs the turn's env state: Runner.policy(..., env_state=state)")
  key = jax.random.fold_in(scene.env_keys_B[0], 1)
  return search.gumbel_muzero_scores(scene.env, scene.state, cands.action, logprob_BxK, key, scene.extra,
                                     agent.search_simulations, agent.search_depth)


def check(lm: LM, layout: Layout) -> None:
  """A clear error when the configured scorer cannot run with this model and env."""
  agent = layout.agent
  scorer = get_scorer(agent.candidate_score)
  if scorer.needs_env and not isinstance(layout.env, TextEnv):
    raise ValueError(f"candidate_score={agent.candidate_score!r} steps the environment inside the graph, and a "
                     f"host environment has no pure step: use candidate_score='value' (a 'policy_value' model) or "
                     f"act_candidates=1 (got {agent.act_candidates})")
  if scorer.needs_value and lm.kind != "policy_value":
    raise ValueError(f"candidate_score={agent.candidate_score!r} reads the value head: use a 'policy_value' model "
                     f"(jarl.models.with_value_head; a critic estimator such as 'gae' trains it), got {lm.kind!r}")


def candidate_keys(key: Array, K: int) -> Array:
  """[K] keys: the ACT key itself first (candidate 1 is the K = 1 action), then fold_in(key, k)."""
  return jnp.concatenate([key[None], jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(1, K))])


class BestOfK:
  """The ACT segment as best-of-K (see the module docstring); `Runner.policy` calls it."""

  def __init__(self, runner, choose_more: Callable | None = None):
    check(runner.lm, runner.layout)
    self.runner, self.K = runner, runner.layout.candidates
    self.budget = runner.layout.budgets[Segment.ACT]
    self.scorer = get_scorer(runner.layout.agent.candidate_score)
    self.choose_more = choose_more  # the sampler of candidates 2..K (None: the runner's)

  def choose(self, k: Array) -> Callable:
    if self.choose_more is None:
      return self.runner.choose
    return lambda logits_BxV, key: jax.lax.cond(k == 0, self.runner.choose, self.choose_more, logits_BxV, key)

  def __call__(self, params, c: Carry, turn, alive_B: Array, keys: dict, texts: dict,
               env_state=None) -> tuple[Carry, Tokens, dict]:
    """(carry holding only the chosen candidate, its text [B, budget], the turn's planning record)."""
    r, B, K = self.runner, alive_B.shape[0], self.K
    scene = Scene(r.lm, params, r.layout.env, env_state, *r.env_inputs(keys, texts, B))
    start = r.header(params, c, Segment.ACT, turn, alive_B)

    def candidate(carry, xs):
      c, best = carry
      k, key = xs
      after, text = r.sampled(params, c, Segment.ACT, turn, alive_B, key, choose=self.choose(k))
      score_B = self.scorer(scene, Candidate(text, r.as_action(text), after.hidden_BxD)).astype(jnp.float32)
      score_B = jnp.where(alive_B, score_B, 0.0)
      this = dict(k_B=jnp.full((B,), k, jnp.int32), score_B=score_B, text=text, cursor=cursor(after))
      best = where((k == 0) | (score_B > best["score_B"]), this, best)  # ties keep the earlier candidate
      return (hide_slots(c, after), best), score_B

    if self.scorer.joint:
      c, best, scores_KxB = self.joint(params, scene, start, turn, alive_B, keys)
    else:
      none = dict(k_B=jnp.zeros((B,), jnp.int32), score_B=jnp.zeros((B,), jnp.float32), cursor=cursor(start),
                  text=Tokens(jnp.full((B, self.budget), r.pad_id, jnp.int32), jnp.zeros((B,), jnp.int32)))
      (c, best), scores_KxB = jax.lax.scan(candidate, (start, none), (jnp.arange(K), candidate_keys(keys["act"], K)))
    first_Bx1 = start.cache.index + best["k_B"][:, None] * self.budget  # the chosen range's first slot
    slot_1xT = jnp.arange(c.buf["valid"].shape[1])[None, :]
    keep_BxT = (slot_1xT >= first_Bx1) & (slot_1xT < first_Bx1 + self.budget)
    c = keep_slots(start, c, keep_BxT, best["cursor"])
    record = dict(chosen=best["k_B"], best_score=best["score_B"], scores=scores_KxB.T)
    return c, best["text"], record

  def joint(self, params, scene: Scene, start: Carry, turn, alive_B: Array, keys: dict):
    """Sample all K candidates (each hidden once sampled), then rate them together: (carry, best, scores [K, B])."""
    r, B, K = self.runner, alive_B.shape[0], self.K

    def candidate(c, xs):
      k, key = xs
      after, text = r.sampled(params, c, Segment.ACT, turn, alive_B, key, choose=self.choose(k))
      return hide_slots(c, after), dict(text=text, action=r.as_action(text), hidden=after.hidden_BxD,
                                        cursor=cursor(after))

    c, cands = jax.lax.scan(candidate, start, (jnp.arange(K), candidate_keys(keys["act"], K)))
    logprob_BxKxN = jax.lax.dynamic_slice_in_dim(c.buf["logprob"], start.cache.index, K * self.budget, axis=1)
    logprob_BxK = logprob_BxKxN.reshape(B, K, self.budget).sum(-1)
    scores_BxK = self.scorer(scene, Candidate(cands["text"], cands["action"], cands["hidden"]), logprob_BxK,
                             r.layout.agent)
    scores_KxB = jnp.where(alive_B, scores_BxK.T.astype(jnp.float32), 0.0)
    k_B = jnp.argmax(scores_KxB, axis=0).astype(jnp.int32)  # ties: the earlier candidate
    pick = lambda x: x[k_B, jnp.arange(B)]  # noqa: E731
    best = dict(k_B=k_B, score_B=pick(scores_KxB), text=jax.tree.map(pick, cands["text"]),
                cursor=jax.tree.map(pick, cands["cursor"]))
    return c, best, scores_KxB


def idle_record(B: int, K: int) -> dict:
  """The planning record of a turn no row plays (host bridge)."""
  return dict(chosen=jnp.zeros((B,), jnp.int32), best_score=jnp.zeros((B,), jnp.float32),
              scores=jnp.zeros((B, K), jnp.float32))


def metrics(traj) -> dict:
  """Best-of-K at a glance, over played turns: mean best score, mean candidate score, mean
  score of candidate 1 (what K = 1 would act on), and how often search changed the action."""
  p, live = traj.planning, traj.turn_live
  n = jnp.maximum(live.sum(), 1)
  mean = lambda x: jnp.where(live, x, 0.0).sum() / n  # noqa: E731
  return {"best_score": mean(p["best_score"]), "candidate_score": mean(p["scores"].mean(-1)),
          "first_score": mean(p["scores"][..., 0]), "changed_rate": mean(p["chosen"] != 0)}
