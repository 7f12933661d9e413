"""Data passed between the rollout and the learner (flax.struct dataclasses, pytrees)."""

from __future__ import annotations

import flax.struct
import jax

Array = jax.Array


@flax.struct.dataclass
class Trajectory:
  """A batch of B episodes laid out as [B, T] slots (T = Layout.total_len), N = max_turns.

  Slot buffers (replay `tokens` with `positions` and `valid` through one forward to get
  exactly the sampler's logits; see `forward.replay_logprobs`):
    tokens, positions      int32 [B, T]
    valid                  bool  [B, T]  the slot holds a real token of this row
    segment, turn          int32 [B, T]  agent.Segment id and turn index of each slot
    loss_mask              bool  [B, T]  tokens the policy sampled
    logprob                f32   [B, T]  raw policy log-prob of each sampled token (0 elsewhere)
    reward                 f32   [B, T]  each turn's env reward at that turn's last policy token
  Per-turn records [B, N]: `turn_reward`, `turn_live` (the turn was played), `terminated`,
  `truncated`, `verdict` (1 revise, 0 accept, -1 none), `info` (the env's info dict).
  Per-episode summary [B]: `episode` dict with return, success, turns, valid_action_rate, and the
  batch's `decode_steps` against its `decode_budget` and `decode_rows`, the rows those steps computed
  (the same in every row: the rows decode together).
  With a critique, `attempts` holds per-turn records [B, N] of both branches, each stepped
  from the turn's state: `first_reward`, `first_success` (the ACT answer), `revised_reward`,
  `revised_success` (the REVISE answer, sampled by every row; rows that accepted dropped it
  from their context). The episode continues with the branch the verdict chose.
  With best-of-K (`AgentConfig.act_candidates` > 1, `jarl.planning`), `planning` holds per
  turn: `chosen` int32 [B, N] (the candidate kept as the ACT text), `best_score` f32 [B, N]
  and `scores` f32 [B, N, K] (0 for turns not played).
  """
  tokens: Array
  positions: Array
  valid: Array
  segment: Array
  turn: Array
  loss_mask: Array
  logprob: Array
  reward: Array
  turn_reward: Array
  turn_live: Array
  terminated: Array
  truncated: Array
  verdict: Array
  info: dict
  episode: dict
  attempts: dict = flax.struct.field(default_factory=dict)
  planning: dict = flax.struct.field(default_factory=dict)
