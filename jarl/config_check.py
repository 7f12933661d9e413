"""One validation pass over a run config before any work: every problem at once, each naming
the key, its value and what is allowed.

    config_check.check(config)       # ConfigError listing every bad field, or None

Types come from the dataclasses the sections become (AgentConfig, AlgoConfig, OptimConfig,
SamplingConfig: their annotations), ranges from RANGES, and the relations between fields
(batch splits, the warm start's batch) from `_relations`. Names (envs, estimators, presets)
are checked where they are looked up, with the valid choices in the message; lengths against
the model's max_seq_len once the env is built (`jarl.train.build`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections

from jarl import learner
from jarl.agent import AgentConfig
from jarl.sampling import SamplingConfig


class ConfigError(ValueError):
  """A config jarl refuses; the message names the field and what to change (`jarl` prints it alone,
  without a traceback)."""


SECTIONS = {"agent": AgentConfig, "algo": learner.AlgoConfig, "optim": learner.OptimConfig, "sampling": SamplingConfig}


@dataclasses.dataclass(frozen=True)
class Range:
  """low <= x <= high (strict where open); a float range also requires a finite value."""
  low: float = -math.inf
  high: float = math.inf
  open_low: bool = False
  open_high: bool = False
  kind: type = int

  def problem(self, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
      return f"must be {'a number' if self.kind is float else 'an integer'}"
    if self.kind is float and not math.isfinite(value):
      return "must be finite"
    too_low = value <= self.low if self.open_low else value < self.low
    too_high = value >= self.high if self.open_high else value > self.high
    if too_low or too_high:
      return f"must be in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
    return None


COUNT, POSITIVE = Range(0), Range(1)
FRACTION = Range(0.0, 1.0, kind=float)
NONNEGATIVE, ABOVE_ZERO = Range(0.0, kind=float), Range(0.0, open_low=True, kind=float)

RANGES = {
    "seed": COUNT,
    "train.steps": POSITIVE, "train.checkpoint_every": POSITIVE, "train.keep_checkpoints": POSITIVE,
    "train.sample_episodes": COUNT,
    "eval.every": POSITIVE, "eval.tasks": POSITIVE,
    "rollout.n_tasks": POSITIVE, "rollout.group_size": POSITIVE,
    "sft.steps": COUNT, "sft.episodes": COUNT, "sft.batch_size": POSITIVE, "sft.lr": NONNEGATIVE,
    "sft.revise_fraction": FRACTION,
    "optim.lr": ABOVE_ZERO, "optim.warmup_steps": COUNT, "optim.end_lr_fraction": FRACTION,
    "optim.b1": Range(0.0, 1.0, open_high=True, kind=float), "optim.b2": Range(0.0, 1.0, open_high=True, kind=float),
    "optim.eps": ABOVE_ZERO, "optim.weight_decay": NONNEGATIVE, "optim.max_grad_norm": ABOVE_ZERO,
    "algo.epochs": POSITIVE, "algo.minibatches": POSITIVE, "algo.microbatches": POSITIVE,
    "algo.entropy_coef": NONNEGATIVE, "algo.kl_coef": NONNEGATIVE, "algo.value_coef": NONNEGATIVE,
    "algo.value_clip": NONNEGATIVE, "algo.lagrange_lr": NONNEGATIVE,
    "sampling.temperature": NONNEGATIVE, "sampling.top_k": COUNT, "sampling.top_p": Range(0.0, 1.0, open_low=True,
                                                                                         kind=float),
    "sampling.max_new_tokens": POSITIVE, "sampling.vocab_limit": COUNT,
    "sampling.compact_every": COUNT, "sampling.compact_buckets": POSITIVE,
    "agent.plan_budget": COUNT, "agent.act_budget": POSITIVE, "agent.critique_budget": COUNT,
    "agent.revise_budget": COUNT, "agent.act_candidates": POSITIVE, "agent.search_simulations": POSITIVE,
    "agent.search_depth": POSITIVE, "model.attention_block": POSITIVE,
}
_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "tuple": (tuple, list, dict,
                                                                                    ml_collections.ConfigDict)}


def optional_default(key: str) -> Any:
  """The default of `section.field` when a config file may leave that field out: a field of the
  section's dataclass (SECTIONS), or a ModelConfig field that is not architecture (`model.*`), with a
  plain default (a number, string, bool or None). dataclasses.MISSING for any other key."""
  from jarl.models.config import NOT_ARCHITECTURE, ModelConfig  # noqa: PLC0415
  section, _, field = key.partition(".")
  cls = SECTIONS.get(section) or (ModelConfig if section == "model" and field in NOT_ARCHITECTURE else None)
  default = next((f.default for f in dataclasses.fields(cls) if f.name == field), dataclasses.MISSING) if cls else \
      dataclasses.MISSING
  return default if default is None or isinstance(default, (bool, int, float, str)) else dataclasses.MISSING


def _get(config, key: str, default=None):
  node = config
  for part in key.split("."):
    if not hasattr(node, "get") or part not in node:
      return default
    node = node[part]
  return node


def _type_problems(config) -> list[str]:
  """Section fields against their dataclass annotations ("int | None" allows None)."""
  problems = []
  for section, cls in SECTIONS.items():
    for field in dataclasses.fields(cls):
      value = _get(config, f"{section}.{field.name}", dataclasses.MISSING)
      if value is dataclasses.MISSING or value is None and "None" in str(field.type):
        continue
      base = str(field.type).split("[")[0].split(" |")[0]
      allowed = _TYPES.get(base)
      if allowed is not None and (not isinstance(value, allowed) or base in ("int", "float")
                                  and isinstance(value, bool)):
        problems.append(f"{section}.{field.name}={value!r}: must be {field.type}")
  return problems


def _relations(config) -> list[str]:
  problems = []
  n_tasks, group = _get(config, "rollout.n_tasks"), _get(config, "rollout.group_size")
  minibatches, microbatches = _get(config, "algo.minibatches", 1), _get(config, "algo.microbatches", 1)
  if all(isinstance(x, int) and x >= 1 for x in (n_tasks, group, minibatches, microbatches)):
    batch = n_tasks * group
    if batch % minibatches:
      problems.append(f"algo.minibatches={minibatches}: must divide the rollout batch rollout.n_tasks x "
                      f"rollout.group_size = {n_tasks} x {group} = {batch}")
    elif (batch // minibatches) % microbatches:
      problems.append(f"algo.microbatches={microbatches}: must divide a minibatch of {batch // minibatches} rows "
                      f"(batch {batch} / algo.minibatches {minibatches})")
  steps, episodes, batch_size = (_get(config, f"sft.{k}") for k in ("steps", "episodes", "batch_size"))
  if isinstance(steps, int) and steps > 0 and isinstance(episodes, int) and isinstance(batch_size, int) \
      and batch_size > episodes:
    problems.append(f"sft.batch_size={batch_size}: must be at most sft.episodes={episodes} (a batch draws "
                    "distinct episodes)")
  if isinstance(steps, int) and steps > 0 and _get(config, "sft.lr") == 0:
    problems.append(f"sft.lr=0 with sft.steps={steps}: the warm start would not move (set sft.steps=0 to skip it)")
  return problems


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every problem of the config, one line each (empty when it is fine)."""
  found = _type_problems(config)
  typed = {line.split("=")[0] for line in found}
  for key, rule in RANGES.items():
    value = _get(config, key, dataclasses.MISSING)
    if value is dataclasses.MISSING or value is None and key.startswith("agent.") or key in typed:
      continue
    why = rule.problem(value)
    if why:
      found.append(f"{key}={value!r}: {why}")
  return found + _relations(config)


def check(config: ml_collections.ConfigDict) -> None:
  """Raise one ConfigError naming every problem of the config (nothing has started yet)."""
  found = problems(config)
  if found:
    raise ConfigError(f"the config has {len(found)} problem(s):\n  " + "\n  ".join(found))
