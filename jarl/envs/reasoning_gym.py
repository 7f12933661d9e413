"""reasoning-gym datasets as host environments: one problem per episode, one answer per turn.

    env = make_host("rg:chain_sum", dataset_kwargs=dict(max_terms=3, max_digits=1), max_turns=2)
    env.reset([1, 1])          # ["State the final answer to the following arithmetic problem: 1 + 5 =", ...]
    out = env.step(["The answer is 6.", "5"], [True, True])
    out.reward, out.terminated, out.obs[1]     # [1.0, 0.0], [True, False], "That is incorrect. Try again."

Any dataset of `reasoning_gym` (`make_host("rg:<name>")`, or `ReasoningGymEnv(dataset=<name>)`);
`dataset_kwargs` go to its config (`reasoning_gym.create_dataset(name, seed=, size=, **dataset_kwargs)`)
and are checked at construction. `instructions` are shown once before the question (default
"Give only the final answer."; with answer="answer_tag" it asks for the tags). `problem(seed)` gives
the (dataset, entry) a seed plays in the env's split.

Problems. Row b of `reset(seeds)` plays entry 0 of `create_dataset(dataset, seed=2 * seeds[b] + s,
size=1, **dataset_kwargs)` with s = 0 for split "train" and 1 for split "eval": the two splits draw
from disjoint seed streams, the same (split, seed) always gives the same problem (a small problem
space may still repeat a problem across seeds). Seeds are ints in [0, 2**31). Rows of a reset that
share a seed share one dataset. Building one costs well under 10 ms for most datasets; a few load
word lists or boards every time (group_anagrams, arc_agi, figlet_font: ~0.5-0.8 s; word_ladder,
codeio: ~0.2 s) or generate slowly (knight_swap ~2 s, futoshiki ~0.5 s): raise `timeout_s` for those.

Answers. `answer` names how the answer is read from the reply (or is a function str -> str | None):
  "last_number"  the last integer or decimal in the reply, with its sign, commas removed
                 ("It is -1,234.5." -> "-1234.5"; a '-' right after a digit or letter is not a sign);
  "answer_tag"   the text inside the last <answer>...</answer>, stripped;
  "whole"        the whole reply, stripped.
Nothing found (or only white space) is no answer: reward 0, info["valid_action"] False.

Reward. The dataset's `score_answer(answer, entry)` gives score s in [0, 1]. With `partial_credit=False`
(the default) the reward is 1.0 when s == 1.0 and 0.0 otherwise: reasoning-gym's default scorer gives
partial scores to replies that merely contain the answer ("10" for "1" scores 0.5), which a policy
would learn to exploit. With `partial_credit=True` the reward is s. info["success"] is s == 1.0
either way, info["score"] is s; a scorer that raises counts as a wrong answer (valid_action False).

Turns. A right answer ends the episode (terminated). A wrong one is answered with `feedback` while
attempts remain (`max_turns` attempts in all); the last wrong attempt ends it truncated, as the
bridge ends every episode still running at max_turns.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
from typing import Any, Callable

from jarl.envs.host import HostEnv, HostStep, RowError, register_host_prefix

SPLITS = ("train", "eval")  # derived seed = 2 * seed + SPLITS.index(split)
MAX_SEED = 2 ** 31  # derived seeds stay below 2**32 (some datasets seed numpy's global generator with them)

_NUMBER = re.compile(r"(?:(?<![\w)])[-+])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def last_number(reply: str) -> str | None:
  """The last integer or decimal of the reply, sign kept, commas and a '+' removed."""
  found = _NUMBER.findall(reply)
  return found[-1].replace(",", "").removeprefix("+") if found else None


def answer_tag(reply: str) -> str | None:
  """The stripped text inside the last <answer>...</answer>."""
  tags = _ANSWER_TAG.findall(reply)
  return (tags[-1].strip() or None) if tags else None


def whole(reply: str) -> str | None:
  return reply.strip() or None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "last_number": last_number, "answer_tag": answer_tag, "whole": whole}
INSTRUCTIONS = "Give only the final answer."
TAG_INSTRUCTIONS = "Give only the final answer, as <answer>...</answer>."  # the default with answer="answer_tag"


def extractor(answer: str | Callable[[str], str | None]) -> Callable[[str], str | None]:
  if callable(answer):
    return answer
  if answer not in EXTRACTORS:
    raise ValueError(f"unknown answer extractor {answer!r}; available: {sorted(EXTRACTORS)} or a function")
  return EXTRACTORS[answer]


def derived_seed(split: str, seed: int) -> int:
  """The dataset seed of a row's seed in a split: the splits' seed streams are disjoint."""
  if not (isinstance(seed, numbers.Integral) and 0 <= seed < MAX_SEED):
    raise ValueError(f"seed {seed!r} is not an int in [0, 2**31)")
  return 2 * int(seed) + SPLITS.index(split)


def _reasoning_gym():
  try:
    import reasoning_gym  # noqa: PLC0415  (slow to import, and an optional dependency)
  except ImportError as e:
    raise ImportError("the rg:<dataset> environments need reasoning-gym: pip install 'jarl[real]'") from e
  return reasoning_gym


def create(dataset: str, seed: int, dataset_kwargs: dict):
  """reasoning_gym.create_dataset(dataset, seed=seed, size=1, **dataset_kwargs), with errors that say what is wrong."""
  reasoning_gym = _reasoning_gym()
  from reasoning_gym.factory import DATASETS  # noqa: PLC0415
  if dataset not in DATASETS:
    close = difflib.get_close_matches(dataset, DATASETS, n=3)
    raise ValueError(f"unknown reasoning-gym dataset {dataset!r}; " + (f"did you mean {close}? " if close else "")
                     + f"{len(DATASETS)} exist: {sorted(DATASETS)[:10]}... (reasoning_gym.factory.DATASETS)")
  try:
    return reasoning_gym.create_dataset(dataset, seed=seed, size=1, **dataset_kwargs)
  except (TypeError, ValueError, AssertionError) as e:
    fields = [f.name for f in dataclasses.fields(DATASETS[dataset][1]) if f.name not in ("seed", "size")]
    raise ValueError(f"bad dataset_kwargs {dataset_kwargs} for reasoning-gym dataset {dataset!r} "
                     f"({type(e).__name__}: {e}); its config takes {fields}") from e


def _as_dict(pairs: Any) -> dict:
  """A dict from a mapping, a ConfigDict or (key, value) pairs."""
  return dict(pairs.items()) if hasattr(pairs, "items") else dict(pairs)


@dataclasses.dataclass
class _Row:
  dataset: Any  # the reasoning_gym dataset that made the problem (it scores the answers)
  entry: dict
  turns: int = 0


class ReasoningGymEnv(HostEnv):
  """A reasoning-gym dataset as a HostEnv (see the module docstring)."""

  def __init__(self, *, dataset: str, dataset_kwargs: Any = (), split: str = "train", max_turns: int = 1,
               feedback: str = "That is incorrect. Try again.",
               answer: str | Callable[[str], str | None] = "last_number", partial_credit: bool = False,
               instructions: str | None = None, obs_len: int = 128, action_len: int = 32,
               timeout_s: float = 60.0):
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; available: {list(SPLITS)}")
    if max_turns < 1:
      raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    self.dataset, self.dataset_kwargs, self.split = dataset, _as_dict(dataset_kwargs), split
    create(dataset, derived_seed(split, 0), self.dataset_kwargs)  # fails here on a bad name or config
    self.extract = extractor(answer)
    if instructions is None:
      instructions = TAG_INSTRUCTIONS if answer == "answer_tag" else INSTRUCTIONS
    self.instructions, self.feedback, self.partial_credit = instructions, feedback, partial_credit
    self.max_turns, self.obs_len, self.action_len, self.timeout_s = max_turns, obs_len, action_len, timeout_s
    self._rows: list[_Row | None] = []

  def problem(self, seed: int) -> tuple[Any, dict]:
    """(dataset, entry) of a seed in this env's split."""
    ds = create(self.dataset, derived_seed(self.split, seed), self.dataset_kwargs)
    return ds, ds[0]

  def reset(self, seeds):
    problems: dict[int, Any] = {}
    for seed in dict.fromkeys(seeds):  # rows of a group share a seed: one dataset per seed
      try:
        problems[seed] = self.problem(seed)
      except Exception as e:  # noqa: BLE001  (a bad seed or a failing generator ends only its rows)
        problems[seed] = RowError(f"{type(e).__name__}: {e}")
    self._rows = [None if isinstance(problems[s], RowError) else _Row(*problems[s]) for s in seeds]
    return [problems[s] if isinstance(problems[s], RowError) else problems[s][1]["question"] for s in seeds]

  def step(self, actions, live):
    return self._rows_step(actions, live, advance=True)

  def score(self, actions, live):
    """What step would return; no episode advances (a critique's other branch is scored with it)."""
    return self._rows_step(actions, live, advance=False)

  def _rows_step(self, actions, live, advance: bool) -> HostStep:
    rows = [self._step_row(b, action, advance) if live[b] else ("", 0.0, False, False, {})
            for b, action in enumerate(actions)]
    return HostStep(*(list(column) for column in zip(*rows)))

  def _step_row(self, b: int, action: str, advance: bool) -> tuple:
    row = self._rows[b] if b < len(self._rows) else None
    if row is None:
      return RowError("this row has no problem (reset failed or was not called)"), 0.0, False, False, {}
    turns = row.turns + 1
    if advance:
      row.turns = turns
    score, valid = self._score(row, action)
    success = score == 1.0
    info = dict(success=success, valid_action=valid, score=score)
    reward = score if self.partial_credit else float(success)
    if success:
      return "", reward, True, False, info
    return self.feedback, reward, False, turns >= self.max_turns, info

  def _score(self, row: _Row, action: str) -> tuple[float, bool]:
    """(score in [0, 1], valid_action) of a reply; no answer or a scorer that raises: (0.0, False)."""
    try:
      answer = self.extract(action)
      if answer is None:
        return 0.0, False
      score = float(row.dataset.score_answer(answer, row.entry))
    except Exception:  # noqa: BLE001  (the scorer or extractor choked on the reply: a wrong answer)
      return 0.0, False
    return (min(max(score, 0.0), 1.0) if math.isfinite(score) else 0.0), True


register_host_prefix("rg", lambda name, **kwargs: ReasoningGymEnv(dataset=name, **kwargs))
