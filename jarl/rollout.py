"""The vectorized multi-turn rollout: B tasks x G samples for up to N turns in ONE jit.

    collect = make_collect(lm, env, AgentConfig(plan_budget=16), n_tasks=8, group_size=4)
    traj = collect(lm.params, key)          # Trajectory with [B*G, T] slot buffers

Inside the program: reset every env (the G samples of a task share its reset key),
force the prompt (prefilled once per distinct prefix: the instructions at one row, each
task's first observation at one row of its group, then copied; `Runner.start`), then
`lax.scan` over turns; each turn forces each segment's header and samples the segment
token by token (a `while_loop` over its budget that ends when every row has stopped) through one
persistent KV cache, steps the env on the parsed action, and forces the env's next observation.
All rows share one slot cursor: a row that is idle in a slot (its segment already stopped, its
episode over, or a REVISE it does not need) writes an invalid slot. Forced text is written a chunk
at a time (one forward over the chunk), sampled tokens one slot per step. The slot buffers double as
the training batch: `forward.replay_logprobs` recomputes the sampled tokens' log-probs with one full
forward.

With `AgentConfig.act_candidates = K > 1` the ACT segment is a best-of-K search
(`jarl.planning`): K candidates are sampled one after another into K slot ranges, each
hidden from the context once sampled (`slots.hide_slots`), and the best-scoring one is put back
(`slots.keep_slots`), so the buffers read as if the policy had sampled the chosen text alone.

The phases (`Runner.start`, `.policy`, `.feedback`) are also jitted one by one by the
host bridge (`jarl.envs.host`), which steps Python environments between turns.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jarl import compaction, planning, sharding, slots
from jarl.compaction import run_if
from jarl.agent import AgentConfig, Layout, Segment, header_slots, make_layout
from jarl.envs.base import TextEnv
from jarl.envs.codec import Tokens
from jarl.models import KVCache, LM, cache_shardings
from jarl.sampling import SamplingConfig, policy_logprob, sample_tokens, segment_ends
from jarl.slots import Carry
from jarl.types import Trajectory

Array = jax.Array
BUFFERS = {"tokens": jnp.int32, "positions": jnp.int32, "valid": jnp.bool_, "segment": jnp.int32,
           "turn": jnp.int32, "loss_mask": jnp.bool_, "logprob": jnp.float32, "reward": jnp.float32}


class Runner:
  """The pieces of one rollout program, closed over the static layout.

  `start`, `policy` and `feedback` are one episode's phases; `make_collect` scans them
  over turns in one jit, and the host bridge (`jarl.envs.host`) jits them one by one.
  """

  def __init__(self, lm: LM, layout: Layout, sampling: SamplingConfig, choose: Callable | None = None,
               mesh: Mesh | None = None, candidate_sampling: SamplingConfig | None = None):
    # the rollout's forwards lay activations (and the cache) out as its params (`ModelConfig.decode_sharding`)
    self.rules = sharding.DECODE_RULES[lm.config.decode_sharding]
    self.lm, self.layout, self.sampling, self.mesh = lm.replace(rules=self.rules), layout, sampling, mesh
    self.choose = choose or _sampler(sampling)
    self.codec = layout.env.codec
    self.pad_id = self.codec.pad_id
    self.revise_on = Segment.REVISE in layout.budgets
    self.best_of_k = None
    if layout.candidates > 1:  # (checks that the scorer can run here)
      other = candidate_sampling not in (None, sampling) and not choose
      self.best_of_k = planning.BestOfK(self, _sampler(candidate_sampling) if other else None)

  def decode_params(self, params):
    """The rollout's copy of the params, made once per collect: floats in the compute dtype (every layer
    casts to it anyway, so the tokens are the same; the value head keeps float32), and with a mesh in
    the rollout's layout (`sharding.DECODE_RULES`): replicated over fsdp, so that a decode step runs no
    collective to gather weights, or split over fsdp x tensor ("tensor"). The update still trains (and
    recomputes log-probs with) the master params."""
    dtype = self.lm.config.compute_dtype

    def cast(path, x):  # the value head computes in float32 (`heads.ScalarHead`): its params stay so
      in_value_head = any(getattr(k, "key", None) == "value_head" for k in path)
      return x if in_value_head or not jnp.issubdtype(x.dtype, jnp.floating) else x.astype(dtype)
    params = jax.tree_util.tree_map_with_path(cast, params)
    if self.mesh is None:
      return params
    return jax.lax.with_sharding_constraint(params, self.lm.param_shardings(self.mesh, self.rules))

  def forced(self, params, c: Carry, toks: Tokens, segment: Segment, turn, live_B) -> Carry:
    """Write a chunk of forced tokens [B, K] for live rows with one forward over the chunk; with no live
    row, no forward: the cursor moves past the chunk's K slots, which stay idle. With live-row compaction
    (`SamplingConfig.compact_every`) the forward runs over the live rows gathered (`on_rows`)."""
    def live(c):
      if not self.sampling.compact_every:
        return self._forced(params, c, toks, segment, turn, live_B)
      def fn(c, rows_b):  # (the chunk and the live mask are read, not written: only the carry goes back)
        return self._forced(params, c, compaction.take_rows(toks, rows_b), segment, turn, live_B[rows_b])
      return self.on_rows(fn, c, live_B)
    done = run_if(any_row(live_B), live, c)
    return done.replace(cache=done.cache.replace(index=c.cache.index + toks.size))

  def _forced(self, params, c: Carry, toks: Tokens, segment: Segment, turn, live_B) -> Carry:
    K = toks.size
    valid_BxK = (jnp.arange(K)[None, :] < toks.length[:, None]) & live_B[:, None]
    positions_BxK = jnp.where(valid_BxK, c.next_pos_B[:, None] + jnp.cumsum(valid_BxK, 1) - 1, 0)
    h_BxKxD, cache = self.lm.apply(params, toks.ids, positions_BxK, c.cache, valid_BxK, method="hidden")
    n_B = valid_BxK.sum(1)
    last_h_Bx1xD = jnp.take_along_axis(h_BxKxD, jnp.maximum(n_B - 1, 0)[:, None, None], axis=1)
    logits_BxV = self.lm.apply(params, last_h_Bx1xD, method="logits")[:, 0]
    buf = slots.write(c, dict(tokens=jnp.where(valid_BxK, toks.ids, self.pad_id), positions=positions_BxK,
                         valid=valid_BxK, segment=jnp.where(valid_BxK, int(segment), 0),
                         turn=jnp.where(valid_BxK, turn, 0)))
    wrote_Bx1 = (n_B > 0)[:, None]
    return c.replace(cache=cache, buf=buf, next_pos_B=c.next_pos_B + n_B,
                     logits_BxV=jnp.where(wrote_Bx1, logits_BxV, c.logits_BxV),
                     hidden_BxD=jnp.where(wrote_Bx1, last_h_Bx1xD[:, 0], c.hidden_BxD))

  def sampled(self, params, c: Carry, segment: Segment, turn, live_B, key, allowed=None, choose=None):
    """Sample up to the segment's budget, one slot per step; returns (carry, text Tokens [B, budget]).

    The loop stops as soon as every row has stopped (early exit); the cursor still moves past the
    whole budget, so the slots of the steps not run stay idle and every segment keeps its slots.
    `choose(logits_BxV, key) -> token_B` (default: the runner's) draws each token.

    With `SamplingConfig.compact_every = k > 0` (live-row compaction), the rows still sampling are
    gathered (cache, buffers, cursor state) into the smallest batch bucket that holds them
    (`compact_buckets`) and decoded there until, checked every k steps, they fit a smaller one
    (`compaction.keeps_bucket`); then they are put back and gathered again: rows that stopped, or
    whose episode ended, stop costing compute. `choose` then draws one row at a time, with the key folded with
    the row's index, so that a row's tokens do not depend on which rows share its bucket.
    """
    budget = self.layout.budgets[segment]
    B = live_B.shape[0]
    choose = choose or self.choose
    if self.sampling.compact_every:
      choose_rows = compaction.row_keyed(choose)
    else:
      choose_rows = lambda logits_bxV, key, rows_b: choose(logits_bxV, key)  # noqa: E731
    keys = jax.random.split(key, budget)
    end = c.cache.index + budget

    def step(i, state, rows_b):  # one token for the rows `rows_b` (whose state this is)
      c, active_b, ids_bxK, n_b = state
      logits_bxV = c.logits_BxV
      if allowed is not None:  # the verdict: only the allowed tokens can be drawn
        keep_V = jnp.zeros(logits_bxV.shape[-1], bool).at[jnp.asarray(allowed)].set(True)
        logits_bxV = jnp.where(keep_V, logits_bxV, -jnp.inf)
      token_b = jnp.where(active_b, choose_rows(logits_bxV, keys[i], rows_b), self.pad_id)
      raw_logprob_b = policy_logprob(c.logits_BxV, token_b)
      positions_b = c.next_pos_B
      h_bx1xD, cache = self.lm.apply(params, token_b[:, None], positions_b[:, None], c.cache, active_b[:, None],
                                     method="hidden")  # hidden + logits: plain and policy_value handles alike
      logits_bx1xV = self.lm.apply(params, h_bx1xD, method="logits")
      buf = slots.write(c, dict(tokens=token_b[:, None], positions=jnp.where(active_b, positions_b, 0)[:, None],
                           valid=active_b[:, None], segment=jnp.where(active_b, int(segment), 0)[:, None],
                           turn=jnp.where(active_b, turn, 0)[:, None], loss_mask=active_b[:, None],
                           logprob=jnp.where(active_b, raw_logprob_b, 0.0)[:, None]))
      stop_b = token_b == self.layout.stop_id
      text_b = active_b & ~stop_b
      ids_bxK = ids_bxK.at[jnp.arange(rows_b.shape[0]), jnp.where(text_b, n_b, budget)].set(token_b, mode="drop")
      c = c.replace(cache=cache, buf=buf, next_pos_B=c.next_pos_B + active_b,
                    logits_BxV=jnp.where(active_b[:, None], logits_bx1xV[:, 0], c.logits_BxV),
                    last_policy_slot_B=jnp.where(active_b, c.cache.index, c.last_policy_slot_B),
                    hidden_BxD=jnp.where(active_b[:, None], h_bx1xD[:, 0], c.hidden_BxD),
                    decode_rows=c.decode_rows + rows_b.shape[0])
      return c, text_b, ids_bxK, n_b + text_b

    def body(loop, rows_b):  # (i, *state): one step for rows_b
      return (loop[0] + 1,) + step(loop[0], loop[1:], rows_b)

    loop = (jnp.int32(0), c, live_B, jnp.full((B, budget), self.pad_id, jnp.int32), jnp.zeros((B,), jnp.int32))
    if self.sampling.compact_every:  # the rows still sampling, in a bucket while they need it
      loop = compaction.decode(body, loop, lambda loop: loop[0], lambda loop: loop[2], budget, self.buckets(B),
                               self.sampling.compact_every)
    else:  # until the budget or until every row has stopped
      loop = jax.lax.while_loop(lambda loop: (loop[0] < budget) & any_row(loop[2]),
                                lambda loop: body(loop, jnp.arange(B)), loop)
    steps, c, _, ids_BxK, n_B = loop
    c = c.replace(cache=c.cache.replace(index=end), decode_steps=c.decode_steps + steps,
                  decode_budget=c.decode_budget + budget * any_row(live_B))  # (segments some row plays)
    return c, Tokens(ids_BxK, n_B)

  def buckets(self, B: int) -> list[int]:
    """The batch sizes live-row compaction computes at (`compaction.buckets`; with a mesh, multiples of its
    batch shards)."""
    shards = sharding.batch_shards(self.mesh, self.rules) if self.mesh is not None else 1
    return compaction.buckets(B, self.sampling.compact_buckets, shards)

  def on_rows(self, fn: Callable, state, active_B: Array):
    """`fn(state, rows_b) -> state` over the rows in active_B gathered into a bucket (`compaction.on_rows`)."""
    return compaction.on_rows(fn, state, active_B, self.buckets(active_B.shape[0]))

  def segment(self, params, c, segment, turn, live_B, key, allowed=None):
    c = self.header(params, c, segment, turn, live_B)
    return self.sampled(params, c, segment, turn, live_B, key, allowed)

  def header(self, params, c: Carry, segment: Segment, turn, live_B) -> Carry:
    """Force the segment's header for live rows (nothing when it is empty)."""
    header = self.layout.headers[segment]
    if not header_slots(header):
      return c
    batched = Tokens(jnp.broadcast_to(header.ids, live_B.shape + header.ids.shape),
                     jnp.broadcast_to(header.length, live_B.shape))
    return self.forced(params, c, batched, segment, turn, live_B)

  def observation(self, obs: Tokens) -> Tokens:
    """Observations [B, obs_len] behind the feedback header, in feedback_len slots."""
    return _join(self.codec, self.layout.feedback_header, obs, self.layout.feedback_len)

  def start(self, params, obs: Tokens, cache_len: int | None = None, group_size: int = 1) -> Carry:
    """Empty cache and slot buffers, then the PROMPT: instructions and the first observations [B, obs_len].

    The slot buffers hold the whole episode (layout.total_len slots); the KV cache holds
    `cache_len` slots (default: as many), and `grow` extends it between turns.
    The prompt is prefilled once per distinct prefix (shared prefill): the instructions, the same in
    every row, for one row; the first observation for one row of each group of `group_size` rows
    (rows [g G, (g + 1) G) must hold the same observation: the G samples of a task); then the rows
    are copied (`compaction.take_rows`). Each row's slots, cache and logits are those of one forward
    over its whole prompt (the same math: a prompt token attends to the tokens before it).
    """
    B, S = obs.ids.shape[0], int(self.layout.system.length)
    if B % group_size:
      raise ValueError(f"a batch of {B} rows does not split into groups of {group_size}")
    cache_len = cache_len or self.layout.total_len
    rows = B // group_size
    c = self._empty(1 if S else rows, cache_len)
    if S:  # the instructions, once, then in every group's row
      system = Tokens(self.layout.system.ids[None, :S], self.layout.system.length[None])
      c = compaction.take_rows(self.forced(params, c, system, Segment.PROMPT, 0, jnp.ones((1,), bool)),
                               jnp.zeros((rows,), jnp.int32))
    first = compaction.take_rows(obs, jnp.arange(0, B, group_size))
    c = self.forced(params, c, _fit(self.observation(first), self.layout.prompt_len - S, self.pad_id), Segment.PROMPT,
                    0, jnp.ones((rows,), bool))
    if group_size > 1:
      c = compaction.take_rows(c, jnp.repeat(jnp.arange(rows), group_size))
    return c.replace(cache=self._constrain(c.cache))

  def _empty(self, B: int, cache_len: int) -> Carry:
    """B rows of empty slot buffers and an empty cache of cache_len slots."""
    cfg, T = self.lm.config, self.layout.total_len
    buf = {name: jnp.full((B, T), self.pad_id if name == "tokens" else 0, dtype) for name, dtype in BUFFERS.items()}
    return Carry(KVCache.init(cfg, B, cache_len), buf, jnp.zeros((B, cfg.vocab_size), jnp.float32),
                 jnp.zeros((B,), jnp.int32), jnp.zeros((B,), jnp.int32), jnp.zeros((B, cfg.d_model), cfg.compute_dtype),
                 jnp.int32(0), jnp.int32(0), jnp.int32(0))

  def grow(self, c: Carry, cache_len: int) -> Carry:
    """The carry with its KV cache extended to `cache_len` slots (new slots invalid)."""
    return c.replace(cache=self._constrain(c.cache.grow(cache_len)))

  def _constrain(self, cache: KVCache) -> KVCache:
    if self.mesh is None:
      return cache
    return jax.lax.with_sharding_constraint(cache, cache_shardings(self.lm.config, self.mesh, cache.valid_BxS.shape[0],
                                                                    self.rules))

  def policy(self, params, c: Carry, turn, alive_B, keys: dict,
             env_state=None) -> tuple[Carry, Tokens, Array, dict, dict]:
    """One turn's policy segments: (carry, action [B, action_len], revise_B, sampled text per
    segment, best-of-K record: {} when K = 1).

    With a critique, every live row samples a REVISE; rows whose verdict accepted drop
    theirs from the context afterwards (`slots.drop`: a shadow revision, free since idle rows
    compute anyway), so `texts[REVISE]` holds the counterfactual second attempt of every row.
    With K > 1 ACT candidates, ACT is `planning.BestOfK` (env scoring reads `env_state`,
    the turn's state of the in-graph env) and `texts[ACT]` is the chosen candidate.
    """
    B = alive_B.shape[0]
    texts, revise_B, planned = {}, jnp.zeros((B,), bool), {}
    for seg in self.layout.segments:
      allowed = self.layout.verdict_ids if seg == Segment.VERDICT else None
      before = c
      if seg == Segment.ACT and self.best_of_k:
        c, texts[seg], planned = self.best_of_k(params, c, turn, alive_B, keys, texts, env_state)
      else:
        c, texts[seg] = self.segment(params, c, seg, turn, alive_B, keys[seg.name.lower()], allowed)
      if seg == Segment.VERDICT:
        revise_B = alive_B & (texts[seg].ids[:, 0] == self.layout.verdict_ids[1])
      if seg == Segment.REVISE:
        c = slots.drop(before, c, alive_B & ~revise_B)
    first, revised = self.attempts(texts)
    action = first if revised is None else slots.where(revise_B, revised, first)
    return c, action, revise_B, texts, planned

  def as_action(self, text: Tokens) -> Tokens:
    """A sampled text as an env action [B, action_len]."""
    return _fit(text, self.layout.env.action_len, self.pad_id)

  def attempts(self, texts: dict) -> tuple[Tokens, Tokens | None]:
    """The ACT and (with a critique) REVISE texts as env actions [B, action_len]."""
    first = self.as_action(texts[Segment.ACT])
    return first, self.as_action(texts[Segment.REVISE]) if self.revise_on else None

  def env_inputs(self, keys: dict, texts: dict, B: int) -> tuple[Array, dict]:
    """The turn's env step keys [B] and keyword args (the PLAN text, for envs that read it)."""
    reads_plan = getattr(self.layout.env, "reads_plan", False)
    extra = {"plan": texts[Segment.PLAN]} if reads_plan and Segment.PLAN in texts else {}
    return jax.random.split(keys["env"], B), extra

  def record(self, alive_B, reward_B, term_B, trunc_B, revise_B, info: dict) -> dict:
    """One turn's per-row record; rows that did not play it get reward 0, no end and verdict -1."""
    verdict_B = jnp.where(alive_B & self.revise_on, revise_B.astype(jnp.int32), -1)
    return dict(reward=jnp.where(alive_B, reward_B, 0.0), live=alive_B, terminated=alive_B & term_B,
                truncated=alive_B & trunc_B, verdict=verdict_B, info=info)

  def feedback(self, params, c: Carry, turn, obs: Tokens, reward_B, still_B) -> Carry:
    """Add the turn's reward at each row's last policy slot, then force the next obs of rows still playing."""
    B = still_B.shape[0]
    c = c.replace(buf=dict(c.buf, reward=c.buf["reward"].at[jnp.arange(B), c.last_policy_slot_B].add(reward_B)))
    last = turn == self.layout.env.max_turns - 1  # every episode has ended: no slots for a last observation
    return run_if(~last, lambda c: self.forced(params, c, self.observation(obs), Segment.FEEDBACK, turn, still_B), c)


def any_row(mask_B: Array) -> Array:
  """Whether a sampling loop or a forced chunk has a row to compute for (else it is skipped)."""
  return jnp.any(mask_B)


def _sampler(sampling: SamplingConfig) -> Callable:
  return lambda logits_BxV, key: sample_tokens(logits_BxV, key, sampling)[0]


def attempt_record(alive_B: Array, first: tuple, revised: tuple) -> dict:
  """Per row, what the env answered to the first attempt (ACT) and to the revision (REVISE),
  both stepped from the turn's state: reward and success (0 / False for rows not playing)."""
  record = {}
  for name, (_, _, reward_B, _, _, info) in (("first", first), ("revised", revised)):
    record[f"{name}_reward"] = jnp.where(alive_B, reward_B, 0.0)
    record[f"{name}_success"] = alive_B & info["success"]
  return record


def turn_keys(key) -> dict:
  """The random keys of one turn: one per policy segment and one for the env."""
  return dict(zip(("plan", "act", "critique", "verdict", "revise", "env"), jax.random.split(key, 6)))


def trajectory(c: Carry, rec: dict) -> Trajectory:
  """The final carry's slot buffers [B, T] and per-turn records [B, N] as a Trajectory, with the episode
  summary (and the batch's decode steps against their budget and the rows they computed, the same in every
  row)."""
  buf, live = c.buf, rec["live"]
  n_turns = live.sum(1)
  episode = dict(
      return_=rec["reward"].sum(1),
      success=(rec["info"]["success"] & live).any(1),
      turns=n_turns,
      valid_action_rate=(rec["info"]["valid_action"] & live).sum(1) / jnp.maximum(n_turns, 1),
      tokens=buf["loss_mask"].sum(1),
      decode_steps=jnp.broadcast_to(c.decode_steps, n_turns.shape),
      decode_budget=jnp.broadcast_to(c.decode_budget, n_turns.shape),
      decode_rows=jnp.broadcast_to(c.decode_rows, n_turns.shape))
  if "cost" in rec["info"]:  # constrained RL (jarl.safety): the episode's summed per-step cost
    episode["cost"] = jnp.where(live, rec["info"]["cost"], 0.0).sum(1)
  return Trajectory(**buf, turn_reward=rec["reward"], turn_live=live, terminated=rec["terminated"],
                    truncated=rec["truncated"], verdict=rec["verdict"], info=rec["info"], episode=episode,
                    attempts=rec.get("attempts", {}), planning=rec.get("planning", {}))


def _fit(toks: Tokens, size: int, pad_id: int) -> Tokens:
  """Pad or cut a batched Tokens buffer to `size` slots."""
  K = toks.size
  ids = toks.ids[:, :size] if K >= size else jnp.pad(toks.ids, ((0, 0), (0, size - K)), constant_values=pad_id)
  return Tokens(ids, jnp.minimum(toks.length, size))


def _join(codec, head: Tokens, body: Tokens, size: int) -> Tokens:
  """Per row: unbatched `head` then batched `body`, into `size` slots."""
  return jax.vmap(lambda ids, n: codec.concat([head, Tokens(ids, n)], size))(body.ids, body.length)


def turn_groups(n_turns: int, groups: int = 4) -> list[int]:
  """Where the rollout's scan over turns stops to grow the KV cache: the end of each of up to
  `groups` runs of turns. Each run is its own scan (the turn is traced once per run), and
  attends over the slots its last turn can reach, not the whole episode's."""
  return segment_ends(n_turns, groups, min_len=1)


def cache_lengths(layout: Layout) -> list[int]:
  """The KV cache's slots during each run of turns (`turn_groups`): what the run's last turn can reach."""
  return [min(layout.prompt_len + end * layout.turn_len, layout.total_len)
          for end in turn_groups(layout.env.max_turns)]


@functools.lru_cache(maxsize=32)
def make_collect(lm: LM, env: TextEnv, agent: AgentConfig, n_tasks: int, group_size: int = 1,
                 sampling: SamplingConfig = SamplingConfig(), mesh: Mesh | None = None,
                 choose: Callable | None = None, candidate_sampling: SamplingConfig | None = None) -> Callable:
  """A jitted `collect(params, key) -> Trajectory` for n_tasks x group_size episodes.

  `choose(logits_BxV, key) -> token_B` replaces the sampler (scripted policies, tests).
  `candidate_sampling`: with best-of-K, the sampler of candidates 2..K (None: `sampling`);
  candidate 1 always draws as a K = 1 rollout would (e.g. greedy, then sampled alternatives).

  A host env (`jarl.envs.host`, made by `envs.make` with its codec) gets the host rollout
  (`make_host_collect`): the same Trajectory, stepped in Python between jitted turns.
  """
  if not isinstance(env, TextEnv):
    from jarl.envs import host  # noqa: PLC0415  (host builds on this module)
    if choose is not None or candidate_sampling is not None:
      raise ValueError("make_collect: choose and candidate_sampling need an in-graph env, not a host env")
    if getattr(env, "codec", None) is None:
      raise ValueError(f"host env {type(env).__name__} has no codec: make it with jarl.envs.make(name, tokenizer=...)")
    return host.make_host_collect(lm, env, env.codec, agent, n_tasks, group_size, sampling, mesh)
  layout = make_layout(agent, env)
  runner = Runner(lm, layout, sampling, choose, mesh, candidate_sampling)
  B, N = n_tasks * group_size, env.max_turns
  groups, cache_lens = turn_groups(N), cache_lengths(layout)

  def collect(params, key):
    params = runner.decode_params(params)
    key_tasks, key_env, key_turns = jax.random.split(key, 3)
    state, obs = jax.vmap(env.reset)(jnp.repeat(jax.random.split(key_tasks, n_tasks), group_size, axis=0))
    c = runner.start(params, obs, cache_lens[0], group_size)  # (the G rows of a task share its observation)

    def turn_fn(carry, xs):
      c, state, alive_B = carry
      turn, key = xs
      keys = turn_keys(key)
      c, _, revise_B, texts, planned = runner.policy(params, c, turn, alive_B, keys, env_state=state)
      env_keys, extra = runner.env_inputs(keys, texts, B)
      step = jax.vmap(lambda s, a, k, **kw: env.step(s, a, k, **kw))
      first, revised = runner.attempts(texts)
      out = step(state, first, env_keys, **extra)
      if revised is not None:  # both branches from the same state and key: the verdict's counterfactual
        out_revised = step(state, revised, env_keys, **extra)
        attempts = attempt_record(alive_B, out, out_revised)
        out = slots.where(revise_B, out_revised, out)
      new_state, obs, reward_B, term_B, trunc_B, info = out
      state = slots.where(alive_B, new_state, state)
      record = runner.record(alive_B, reward_B, term_B, trunc_B, revise_B, info)
      if revised is not None:
        record["attempts"] = attempts
      if planned:
        record["planning"] = planned
      still_B = alive_B & ~(record["terminated"] | record["truncated"])
      c = runner.feedback(params, c, turn, obs, record["reward"], still_B)
      return (c, state, still_B), record

    turns = (jnp.arange(N), jax.random.split(key_turns, N))
    carry, recs = (c, state, jnp.ones((B,), bool)), []
    for first, end, cache_len in zip([0] + groups[:-1], groups, cache_lens):  # turns [first, end)
      carry = (runner.grow(carry[0], cache_len),) + carry[1:]  # attend over the slots they can reach
      carry, rec = jax.lax.scan(turn_fn, carry, jax.tree.map(lambda x: x[first:end], turns))
      recs.append(rec)
    rec = jax.tree.map(lambda *x: jnp.concatenate(x), *recs)
    return trajectory(carry[0], jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), rec))  # [N, B] -> [B, N]

  if mesh is None:
    return jax.jit(collect)
  sharding.check_divisible("rollout batch", (B,), sharding.logical_to_spec(("batch",)), mesh)
  out = jax.tree.map(lambda x: sharding.batch_sharding(mesh, x.ndim),
                     jax.eval_shape(collect, lm.params, jax.random.key(0)))
  return jax.jit(collect, in_shardings=(lm.param_shardings(mesh), sharding.replicated(mesh)), out_shardings=out)
