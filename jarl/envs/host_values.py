"""The checks on what a host env returns for one row (`jarl.envs.host` calls `row_values` per row:
the one isolation point, so a bad value ends its own episode, never the batch)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class RowError:
  """In place of a row's observation: this row's env failed (the bridge ends its episode)."""
  message: str


class BadRow(ValueError):
  """A row's step values fail the checks (the message names which and how)."""


FLOAT32_MAX = float(np.finfo(np.float32).max)


def row_values(obs, reward, term, trunc, info) -> tuple[float, bool, bool, bool, bool]:
  """One row of a HostStep checked and converted: (reward, terminated, truncated, success,
  valid_action), or BadRow naming every problem. The reward must be a real number that stays
  finite as float32 (1e300 and 10**400 do not); flags and info's success / valid_action bools."""
  if isinstance(obs, RowError):
    raise BadRow(obs.message)
  bad = []
  if not isinstance(obs, str):
    bad.append(f"obs {obs!r:.60} is not a str")
  if not _finite32(reward):
    bad.append(f"reward {reward!r:.30} is not a number that is finite in float32")
  if not (_is_bool(term) and _is_bool(trunc)):
    bad.append(f"terminated/truncated {term!r:.20}/{trunc!r:.20} are not bools")
  if not isinstance(info, dict):
    bad.append(f"info {info!r:.60} is not a dict")
    info = {}
  flags = {"success": info.get("success", False), "valid_action": info.get("valid_action", True)}
  bad += [f"info[{k!r}] {v!r:.30} is not a bool" for k, v in flags.items() if not _is_bool(v)]
  if bad:
    raise BadRow("garbage from step: " + "; ".join(bad))
  return float(reward), bool(term), bool(trunc), bool(flags["success"]), bool(flags["valid_action"])


def _finite32(x) -> bool:
  if not isinstance(x, (int, float, np.integer, np.floating)):
    return False
  try:
    x = float(x)
  except OverflowError:  # an int beyond float64
    return False
  return math.isfinite(x) and abs(x) <= FLOAT32_MAX


def _is_bool(x) -> bool:
  return isinstance(x, (bool, np.bool_)) or isinstance(x, (int, np.integer)) and x in (0, 1)
