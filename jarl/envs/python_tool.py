"""python_tool: arithmetic and small programming tasks, with a sandboxed Python interpreter.

    env = make_host("python_tool", max_turns=4)
    env.reset([2])                                      # ["task: compute (21*20+6) % 9"]
    env.step(["run: (21*20+6) % 9"], [True]).obs        # ["out: 3"]
    env.step(["answer: 3"], [True]).reward              # [1.0]

Each turn the action is one line: `run: <python>` executes the code in a fresh process in an
OS sandbox (`jarl.envs.sandbox`: bubblewrap namespaces, seccomp, resource limits; the env
refuses to start where bwrap cannot run unless `isolation="unsafe_subprocess"` is chosen, which
warns) and the next observation is its output (an expression shows
its repr); `answer: <value>` ends the episode with reward 1 if the value is exactly the
task's answer. Anything else is an invalid action (the episode goes on). Tasks come from
the seed; their answers are integers.
"""

from __future__ import annotations

import logging
import random
import warnings

from jarl.envs import sandbox
from jarl.envs.host import PerEpisodeHostEnv, register_host
from jarl.envs.sandbox import Limits, run_python

log = logging.getLogger(__name__)


def _primes_below(n: int) -> int:
  return sum(all(k % d for d in range(2, int(k ** 0.5) + 1)) for k in range(2, n))


def _fibonacci(n: int) -> int:
  a, b = 0, 1
  for _ in range(n):
    a, b = b, a + b
  return a


def make_task(seed: int) -> tuple[str, int]:
  """A task from the seed: (question, integer answer)."""
  rng = random.Random(seed)
  kind = rng.randrange(5)
  if kind == 0:
    a, b, c, m = rng.randint(10, 99), rng.randint(10, 99), rng.randint(1, 9), rng.randint(7, 19)
    return f"compute ({a}*{b}+{c}) % {m}", (a * b + c) % m
  if kind == 1:
    a, b = rng.randint(2, 9), rng.randint(10, 40)
    return f"the sum of the decimal digits of {a}**{b}", sum(map(int, str(a ** b)))
  if kind == 2:
    n = rng.randint(50, 500)
    return f"how many primes are below {n}", _primes_below(n)
  if kind == 3:
    n, m = rng.randint(20, 80), rng.randint(100, 999)
    return f"the {n}-th Fibonacci number mod {m} (F1 = F2 = 1)", _fibonacci(n) % m
  n = rng.randint(100, 5000)
  return f"the number of divisors of {n}", sum(n % d == 0 for d in range(1, n + 1))


class _ToolEpisode:
  def __init__(self, max_turns: int, limits: Limits, isolation: str):
    self.max_turns, self.limits, self.isolation = max_turns, limits, isolation

  def reset(self, seed: int) -> str:
    self.question, self.answer = make_task(seed)
    self.turn = 0
    return f"task: {self.question}"

  def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
    self.turn += 1
    kind, colon, body = action.strip().partition(":")
    kind, body = kind.strip().lower(), body.strip()
    truncated = self.turn >= self.max_turns
    info = dict(success=False, valid_action=True)
    if colon and kind == "answer":
      info["success"] = body == str(self.answer)
      return ("correct" if info["success"] else "wrong"), float(info["success"]), True, False, info
    if colon and kind == "run" and body:
      return f"out: {run_python(body, self.limits, self.isolation).output}", 0.0, False, truncated, info
    return "invalid: write `run: <python>` or `answer: <value>`", 0.0, False, truncated, dict(info, valid_action=False)


@register_host("python_tool")
class PythonToolEnv(PerEpisodeHostEnv):
  """Arithmetic and small programming tasks; `run:` code in a sandbox, then `answer:`."""

  INSTRUCTIONS = ("Solve the task. Each turn write one line: `run: <python>` runs the code and shows its "
                  "output; `answer: <integer>` ends the episode.")

  def __init__(self, max_turns: int = 4, obs_len: int = 64, action_len: int = 64, limits: Limits = Limits(),
               isolation: str = "bwrap"):
    log.info("python_tool sandbox: %s", sandbox.check(isolation))  # raises SandboxUnavailable where bwrap cannot run
    if isolation == "unsafe_subprocess":
      warnings.warn(sandbox.UNSAFE_WARNING, stacklevel=2)
    super().__init__(lambda: _ToolEpisode(max_turns, limits, isolation), instructions=self.INSTRUCTIONS, obs_len=obs_len,
                     action_len=action_len, max_turns=max_turns, episode_timeout_s=limits.wall_s + 5.0)
