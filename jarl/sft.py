"""Supervised warm start on an environment's expert traces, in the rollout's exact format.

`expert_batch` plays expert episodes on the host (`TextEnv.expert_episode`) and lays
each out as the rollout would: system + first observation, then per turn the segment
headers, the expert's text, the stop token, and the next observation. Loss is on the
expert's ACT tokens (and PLAN tokens when its turns carry "plan_text"); segments the
expert has no text for (CRITIQUE, VERDICT) are written with no loss, so the warm
start does not bias them. Optional revision examples (a wrong first attempt, then the
expert's answer as the REVISE) teach the revision segment its job. Sequences are packed
left-aligned, padded to `length`. `make_sft_step` is the jitted step on such batches (mean NLL).
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from jarl import algos, forward, learner, models
from jarl.agent import Layout, Segment


def _ids(tokens) -> list[int]:
  return np.asarray(tokens.ids)[:int(tokens.length)].tolist()


def episode_tokens(layout: Layout, turns: list[dict], wrong_first: list[str] | None = None) -> tuple[list, list]:
  """(token ids, loss flags) of one expert episode (turns from `TextEnv.expert_episode`).

  A turn may carry "plan_text" (envs with an expert planner); it fills the PLAN segment.
  `wrong_first` (one text per turn; needs a critique): each turn shows that text as the
  first attempt (no loss), the verdict "revise" (no loss), and the expert's action as the
  REVISE (loss on): the warm start then teaches what a revision is for, and nothing about
  when to revise.
  """
  codec = layout.env.codec
  tokens, loss = [], []

  def add(ids, train):
    tokens.extend(int(i) for i in ids)
    loss.extend([train] * len(ids))

  if wrong_first is not None and Segment.REVISE not in layout.budgets:
    raise ValueError("revision examples need a critique (AgentConfig.critique_budget > 0)")
  add(_ids(layout.system), False)
  for n, turn in enumerate(turns):
    add(_ids(layout.feedback_header) + _ids(turn["obs"]), False)
    revise = wrong_first is not None
    for seg in layout.segments:
      if seg == Segment.REVISE and not revise:
        continue  # the expert accepts its own action
      add(_ids(layout.headers[seg]), False)
      if seg == Segment.PLAN:
        plan = turn.get("plan_text")
        add(list(codec.encode(plan or "")) + [layout.stop_id], plan is not None)
      elif seg == Segment.ACT:
        text = wrong_first[n] if revise else turn["action_text"]
        add(list(codec.encode(text)) + [layout.stop_id], not revise)
      elif seg == Segment.CRITIQUE:
        add([layout.stop_id], False)
      elif seg == Segment.VERDICT:
        add([layout.verdict_ids[int(revise)]], False)
      elif seg == Segment.REVISE:
        add(list(codec.encode(turn["action_text"])) + [layout.stop_id], True)
  return tokens, loss


def expert_batch(layout: Layout, n_episodes: int, seed: int, length: int | None = None,
                 revise_fraction: float = 0.0) -> dict:
  """Host-built SFT batch {tokens, positions, valid, loss_mask} of shape [n_episodes, length].

  `revise_fraction` of the episodes (with a critique) are revision examples: each turn's first
  attempt is another episode's expert action at that turn (a wrong answer, most likely) and
  the revision is the right one (see `episode_tokens`).
  """
  env = layout.env
  episodes = [env.expert_episode(jax.random.key(seed * 1_000_003 + i)) for i in range(n_episodes)]
  rng = np.random.default_rng(seed)
  rows = []
  for i, turns in enumerate(episodes):
    wrong = None
    if rng.random() < revise_fraction:
      other = episodes[(i + 1 + rng.integers(n_episodes - 1)) % n_episodes] if n_episodes > 1 else turns
      wrong = [other[min(n, len(other) - 1)]["action_text"] for n in range(len(turns))]
    rows.append(episode_tokens(layout, turns, wrong))
  length = length or max(len(t) for t, _ in rows)
  too_long = [len(t) for t, _ in rows if len(t) > length]
  if too_long:
    raise ValueError(f"an expert episode needs {max(too_long)} tokens, more than the SFT length {length}")
  batch = dict(tokens=np.full((n_episodes, length), env.codec.pad_id, np.int32),
               valid=np.zeros((n_episodes, length), bool), loss_mask=np.zeros((n_episodes, length), bool))
  for b, (tokens, loss) in enumerate(rows):
    batch["tokens"][b, :len(tokens)] = tokens
    batch["valid"][b, :len(tokens)] = True
    batch["loss_mask"][b, :len(tokens)] = loss
  batch["positions"] = np.maximum(np.cumsum(batch["valid"], 1) - 1, 0).astype(np.int32)
  return batch


def make_sft_step(lm: models.LM, optim: learner.OptimConfig, mesh=None) -> Callable:
  """Jitted `(params, opt_state, batch) -> (params, opt_state, metrics)`: mean NLL on loss_mask tokens."""

  def loss_fn(params, batch):
    logp_BxT = forward.policy_outputs(lm, params, batch, None)[0]  # unused outputs are compiled away
    return -algos.masked_mean(logp_BxT, batch["loss_mask"]), {}

  return learner.make_loss_step(lm, optim, loss_fn, "sft", mesh)
