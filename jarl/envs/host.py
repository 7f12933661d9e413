"""Environments that live in Python (tools, code runners, text games) and their rollout bridge.

A HostEnv is batched over the rollout's B rows and speaks strings:

    first_obs = env.reset(seeds)             # list of B str: one first observation per row
    out = env.step(actions, live)            # HostStep of B obs, rewards, terminated, truncated, infos

`make_host_collect` plays the same rollout as `jarl.rollout.make_collect`, with the same
Layout and the same [B, T] Trajectory, one turn at a time: one jitted call runs a turn's
policy segments; the host decodes the actions (the bytes the in-graph codec would see),
steps the env, encodes the observations (cut to obs_len tokens) and a second jitted call
forces them behind the feedback header. The learner consumes the result unchanged.

Failures end only their own episodes. A reset or step that raises or outlives
`env.timeout_s` ends every episode it covers; a row whose observation is a `RowError`,
not a str, whose reward is not a number finite in float32, or whose flags or info's
success / valid_action are not bools ends alone (`host_values.row_values`: one check per row). Such
an episode ends truncated with reward 0 and `info["host_error"]` set on that turn;
`traj.episode["host_error"]` marks it and `collect.last_errors` lists (row, turn, message).
`PerEpisodeHostEnv` builds a HostEnv from single-episode objects with that isolation per
row (threads with a timeout), and `GymTextEnv` adapts gymnasium-style text envs.
`make_host("rg:<dataset>")` plays a reasoning-gym dataset (`jarl.envs.reasoning_gym`).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import logging
import threading
import time
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jarl import planning, sharding
from jarl.agent import AgentConfig, make_layout
from jarl.envs.base import qualified_name, redefines
from jarl.envs.codec import Codec, Tokens
from jarl.envs.host_values import BadRow, RowError, row_values
from jarl.models import LM
from jarl.rollout import Runner, attempt_record, trajectory, turn_keys
from jarl.sampling import SamplingConfig
from jarl.tokenizer import Tokenizer
from jarl.types import Trajectory

log = logging.getLogger(__name__)


@dataclasses.dataclass
class HostStep:
  """One batched step. A row's info may hold `success` and `valid_action` (bools; default
  False and True); entries of rows that were not live are ignored."""
  obs: Sequence[str | RowError]
  reward: Sequence[float]
  terminated: Sequence[bool]
  truncated: Sequence[bool]
  info: Sequence[dict]


class HostEnv(abc.ABC):
  """A batched Python environment. Episodes still running after max_turns are truncated."""

  instructions: str = ""  # shown once before the first observation
  max_turns: int = 1
  obs_len: int = 64  # token budget of an observation; longer ones are cut
  action_len: int = 32  # token budget of an action
  timeout_s: float = 60.0  # the bridge's limit on one reset or step call
  split: str = "train"  # the task stream reset's seeds index: "train", or "eval" for held-out tasks

  @abc.abstractmethod
  def reset(self, seeds: list[int]) -> list[str | RowError]:
    """New episodes, one per seed: their first observations."""

  @abc.abstractmethod
  def step(self, actions: list[str], live: list[bool]) -> HostStep:
    """Step the rows with live[b] (the others have ended; their entries are ignored)."""

  def score(self, actions: list[str], live: list[bool]) -> HostStep:
    """What step(actions, live) would return, without advancing any episode.

    Optional: envs whose step is a pure function of (episode state, action) implement it
    (reasoning-gym's do). With a critique, the rollout then steps the answer the verdict chose
    and scores the other one, so both branches of every turn are known (`Trajectory.attempts`,
    which segment credit reads); without it, only the chosen branch is.
    """
    raise NotImplementedError


class Episode(Protocol):
  """One episode of plain single-episode code, for PerEpisodeHostEnv."""

  def reset(self, seed: int) -> str: ...
  def step(self, action: str) -> tuple[str, float, bool, bool, dict]: ...


class PerEpisodeHostEnv(HostEnv):
  """A HostEnv from single-episode objects: `make_episode()` builds one per row.

  Each row's reset/step runs in its own daemon thread; one that raises, returns something
  that is not a 5-tuple, or outlives `episode_timeout_s` becomes a RowError, and that row
  gets a fresh episode object at the next reset. A hung thread cannot be killed and is
  left running, so code that may hang for good belongs in a subprocess (see sandbox.py).
  """

  def __init__(self, make_episode: Callable[[], Episode], *, instructions: str, obs_len: int, action_len: int,
               max_turns: int, episode_timeout_s: float = 10.0):
    self.make_episode, self.episode_timeout_s = make_episode, episode_timeout_s
    self.instructions, self.obs_len, self.action_len, self.max_turns = instructions, obs_len, action_len, max_turns
    self.timeout_s = 2 * episode_timeout_s + 1  # rows run in parallel: a batched call takes about one row's limit
    self._episodes: list[Episode | None] = []

  def reset(self, seeds):
    old = self._episodes + [None] * (len(seeds) - len(self._episodes))
    episodes = self._episodes = [None] * len(seeds)  # a row that fails keeps None: a fresh one next time

    def reset_row(b, seed):
      episode = self.make_episode() if old[b] is None else old[b]
      obs = episode.reset(seed)
      episodes[b] = episode
      return obs

    out = run_rows({b: functools.partial(reset_row, b, int(s)) for b, s in enumerate(seeds)}, self.episode_timeout_s)
    return [out[b] for b in range(len(seeds))]

  def step(self, actions, live):
    B = len(actions)
    calls = {b: functools.partial(_step_one, self._episodes[b], actions[b]) for b in range(B) if live[b]}
    out = run_rows(calls, self.episode_timeout_s)
    rows = [out.get(b, ("", 0.0, False, False, {})) for b in range(B)]
    for b, row in out.items():
      if isinstance(row, RowError):
        self._episodes[b] = None
        rows[b] = (row, 0.0, False, False, {})
    return HostStep(*(list(column) for column in zip(*rows)))


def _step_one(episode: Episode | None, action: str) -> tuple:
  if episode is None:
    raise RuntimeError("this row has no episode (its reset failed)")
  out = episode.step(action)
  if not (isinstance(out, tuple) and len(out) == 5):
    raise TypeError(f"step must return (obs, reward, terminated, truncated, info), got {out!r:.200}")
  return out


def run_rows(calls: dict[int, Callable[[], Any]], timeout_s: float) -> dict[int, Any]:
  """Run each call in its own daemon thread; per key its result, or a RowError if it raised
  or had not returned `timeout_s` after the start."""
  results = {}

  def run(key, fn):
    try:
      results[key] = fn()
    except BaseException as e:  # noqa: BLE001  (a row's failure, whatever it is, ends only that row)
      results[key] = RowError(f"{type(e).__name__}: {e}")

  threads = [threading.Thread(target=run, args=item, daemon=True) for item in calls.items()]
  for thread in threads:
    thread.start()
  deadline = time.monotonic() + timeout_s
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  return {key: results.get(key, RowError(f"TimeoutError: no reply after {timeout_s:g} s")) for key in calls}


class GymTextEnv(PerEpisodeHostEnv):
  """A gymnasium-style env with text observations and actions (duck-typed: gymnasium is not
  a dependency). `make_env()` builds one per row; it needs `reset(seed=) -> (obs, info)`
  and `step(action) -> (obs, reward, terminated, truncated, info)`."""

  def __init__(self, make_env: Callable[[], Any], **kwargs):  # kwargs: PerEpisodeHostEnv's
    super().__init__(lambda: _GymEpisode(make_env()), **kwargs)


class _GymEpisode:
  def __init__(self, env):
    self.env = env

  def reset(self, seed: int) -> str:
    return self.env.reset(seed=seed)[0]

  def step(self, action: str) -> tuple:
    return tuple(self.env.step(action))


_HOST_ENVS: dict[str, Callable[..., HostEnv]] = {}
_HOST_PREFIXES: dict[str, Callable[..., HostEnv]] = {}


def register_host(name: str) -> Callable:
  """Class decorator: `@register_host("python_tool")` makes a HostEnv available to `make_host`.

  As with `register`, the same class defined again (same module and qualified name) replaces the
  old one; another class under a taken name is an error naming both.
  """
  def add(cls):
    if name in _HOST_ENVS and not redefines(_HOST_ENVS[name], cls):
      raise ValueError(f"host environment {name!r} is already registered by {qualified_name(_HOST_ENVS[name])}; "
                       f"{qualified_name(cls)} needs another name")
    _HOST_ENVS[name] = cls
    return cls
  return add


def register_host_prefix(prefix: str, factory: Callable[..., HostEnv]) -> None:
  """A family of host envs: `make_host("<prefix>:<name>", **kwargs)` calls `factory(name, **kwargs)`
  (the same factory defined again replaces the old one, as in `register_host`)."""
  if prefix in _HOST_PREFIXES and not redefines(_HOST_PREFIXES[prefix], factory):
    raise ValueError(f"host environment prefix {prefix!r} is already registered by "
                     f"{qualified_name(_HOST_PREFIXES[prefix])}; {qualified_name(factory)} needs another prefix")
  _HOST_PREFIXES[prefix] = factory


def _import_builtin_host_envs() -> None:
  import jarl.envs.python_tool  # noqa: F401,PLC0415  (importing them registers the built-in host envs)
  import jarl.envs.reasoning_gym  # noqa: F401,PLC0415


def registered() -> list[str]:
  """Host env names: the registered ones and the prefix families ("rg:<name>")."""
  _import_builtin_host_envs()
  return sorted(_HOST_ENVS) + sorted(p + ":<name>" for p in _HOST_PREFIXES)


def is_host(name: str) -> bool:
  _import_builtin_host_envs()
  prefix, colon, _ = name.partition(":")
  return name in _HOST_ENVS or bool(colon) and prefix in _HOST_PREFIXES


def make_host(name: str, **kwargs) -> HostEnv:
  """A host environment by name: `make_host("python_tool", max_turns=4)`, `make_host("rg:chain_sum")`."""
  if not is_host(name):
    raise ValueError(f"unknown host environment {name!r}; available: {registered()}")
  prefix, colon, rest = name.partition(":")
  if colon and prefix in _HOST_PREFIXES:
    return _HOST_PREFIXES[prefix](rest, **kwargs)
  return _HOST_ENVS[name](**kwargs)


class HostFailure(NamedTuple):
  row: int
  turn: int
  message: str


@dataclasses.dataclass(frozen=True, eq=False)
class _Shape:
  """What `make_layout` and the rollout Runner read from an env."""
  codec: Codec
  instructions: str
  obs_len: int
  action_len: int
  max_turns: int


class HostCollect:
  """`collect(params, key, seeds=None) -> Trajectory` for a HostEnv; see make_host_collect."""

  in_graph = False  # `learner.make_iteration` runs it eagerly, then the update in one jit

  def __init__(self, lm: LM, env: HostEnv, codec: Codec, agent: AgentConfig, n_tasks: int, group_size: int,
               sampling: SamplingConfig, mesh: Mesh | None):
    self.env, self.codec, self.n_tasks, self.group_size, self.mesh = env, codec, n_tasks, group_size, mesh
    self.B = n_tasks * group_size
    if mesh is not None:
      sharding.check_divisible("rollout batch", (self.B,), sharding.logical_to_spec(("batch",)), mesh)
    shape = _Shape(codec, env.instructions, env.obs_len, env.action_len, env.max_turns)
    runner = self.runner = Runner(lm, make_layout(agent, shape), sampling, mesh=mesh)
    self._start = jax.jit(runner.start, static_argnames=("group_size",))
    self._decode_params = jax.jit(runner.decode_params)

    self.both_branches = runner.revise_on and type(env).score is not HostEnv.score  # the env implements score

    def policy(params, c, turn, alive_B, key):  # (best-of-K scores with the value head: no pure env step here)
      c, action, revise_B, texts, planned = runner.policy(params, c, turn, alive_B, turn_keys(key))
      attempts = runner.attempts(texts) if self.both_branches else None  # (first, revised)
      return c, action, revise_B, planned, attempts

    self._policy = jax.jit(policy, donate_argnums=1)
    self._feedback = jax.jit(runner.feedback, donate_argnums=1)
    self._bytes_VxM, self._byte_lengths_V = np.asarray(codec.bytes_VxM), np.asarray(codec.byte_lengths_V)
    self.last_errors: list[HostFailure] = []  # the failures of the last call

  def __call__(self, params, key, seeds: Sequence[int] | None = None) -> Trajectory:
    """Play B = n_tasks x group_size episodes; the G rows of a task share its seed (default: from key)."""
    B, N, env = self.B, self.env.max_turns, self.env
    key_tasks, _, key_turns = jax.random.split(key, 3)  # the in-graph rollout's split
    if seeds is None:
      seeds = np.asarray(jax.random.randint(key_tasks, (self.n_tasks,), 0, np.iinfo(np.int32).max)).tolist()
    if len(seeds) != self.n_tasks:
      raise ValueError(f"need one seed per task ({self.n_tasks}), got {len(seeds)}")
    self.last_errors = []
    params = self._decode_params(params)
    failed_B = np.zeros((B,), bool)  # rows whose env failed (each ends on the turn it failed)
    first = self._call(lambda: env.reset([int(s) for s in seeds for _ in range(self.group_size)]),
                       np.ones((B,), bool), failed_B, 0)
    obs = self._observations([""] * B if first is None else first, ~failed_B, failed_B, 0)
    G = self.group_size  # the prompt is prefilled once per task when its G rows got the same observation
    same = all((np.asarray(x).reshape(self.n_tasks, G, -1) == np.asarray(x)[::G].reshape(self.n_tasks, 1, -1)).all()
               for x in (obs.ids, obs.length))
    c = self._start(params, obs, group_size=G if same else 1)
    alive_B, records, keys = np.ones((B,), bool), [], jax.random.split(key_turns, N)
    for turn in range(N):
      if not alive_B.any():  # every episode is over: the remaining turns are idle slots
        none_B = np.zeros((B,), bool)
        records.append(self._record(none_B, np.zeros((B,), np.float32), none_B, none_B, none_B, {}))
        if self.runner.best_of_k:
          records[-1]["planning"] = planning.idle_record(B, self.runner.layout.candidates)
        if self.both_branches:
          records[-1]["attempts"] = attempt_record(none_B, *_branches(none_B, (none_B, none_B), (none_B, none_B)))
        continue
      c, action, revise_B, planned, attempts = self._policy(params, c, np.int32(turn), alive_B, keys[turn])
      actions, revise_B = self._texts(action), jax.device_get(revise_B)
      if self.both_branches:  # score the branch the verdict did not take, from the same state, before stepping
        first, revised = (self._texts(a) for a in attempts)
        others = [f if r else v for f, v, r in zip(first, revised, revise_B)]
        scoring_B = alive_B & ~failed_B
        scored = self._call(lambda: env.score(others, scoring_B.tolist()), scoring_B, failed_B, turn)
        other_reward_B, _, _, other_info = self._step_arrays(scored, scoring_B, failed_B, turn)
      stepped_B = alive_B & ~failed_B
      out = self._call(lambda: env.step(actions, stepped_B.tolist()), stepped_B, failed_B, turn)
      reward_B, term_B, trunc_B, info = self._step_arrays(out, stepped_B, failed_B, turn)
      going_B = stepped_B & ~failed_B & ~term_B & ~trunc_B & (turn < N - 1)
      obs = self._observations(out.obs if isinstance(out, HostStep) else [""] * B, going_B, failed_B, turn)
      term_B &= ~failed_B
      trunc_B |= failed_B | (turn == N - 1) & ~term_B  # failed rows end truncated, as do rows at the turn limit
      info["host_error"] = alive_B & failed_B
      record = self._record(alive_B, np.where(failed_B, 0.0, reward_B), term_B, trunc_B, revise_B, info)
      if planned:
        record["planning"] = planned
      if self.both_branches:
        record["attempts"] = attempt_record(alive_B & ~failed_B, *_branches(
            revise_B, (reward_B, info["success"]), (other_reward_B, other_info["success"])))
      alive_B = going_B & ~failed_B
      c = self._feedback(params, c, np.int32(turn), obs, record["reward"], alive_B)
      records.append(record)
    rec = jax.tree.map(lambda *xs: jnp.stack(xs, 1), *records)
    traj = trajectory(c, rec)
    traj = traj.replace(episode=dict(traj.episode, host_error=(rec["info"]["host_error"] & rec["live"]).any(1)))
    if self.last_errors:
      first = self.last_errors[0]
      log.warning("host env: %d of %d episodes ended on an env failure (counted in episode/host_error); first: "
                  "row %d, turn %d: %s", len({e.row for e in self.last_errors}), B, first.row, first.turn,
                  first.message)
    if self.mesh is not None:
      traj = jax.device_put(traj, jax.tree.map(lambda x: sharding.batch_sharding(self.mesh, x.ndim), traj))
    return traj

  def _call(self, fn: Callable, rows_B: np.ndarray, failed_B: np.ndarray, turn: int):
    """fn() under env.timeout_s; on a raise or timeout, every row of rows_B fails and None is returned."""
    out = run_rows({0: fn}, self.env.timeout_s)[0]
    if isinstance(out, RowError):
      self._fail(rows_B, failed_B, turn, out.message)
      return None
    return out

  def _fail(self, rows_B: np.ndarray, failed_B: np.ndarray, turn: int, message: str) -> None:
    for b in np.flatnonzero(rows_B & ~failed_B):
      self.last_errors.append(HostFailure(int(b), turn, message))
    failed_B |= rows_B

  def _step_arrays(self, out, stepped_B: np.ndarray, failed_B: np.ndarray, turn: int):
    """Checked per-row reward, terminated, truncated and info arrays of a HostStep (garbage rows fail)."""
    B = self.B
    reward_B, term_B, trunc_B = np.zeros((B,), np.float32), np.zeros((B,), bool), np.zeros((B,), bool)
    info = {"success": np.zeros((B,), bool), "valid_action": np.zeros((B,), bool)}
    columns = [getattr(out, name, None) for name in ("obs", "reward", "terminated", "truncated", "info")]
    if out is not None and not all(_sized(col, B) for col in columns):
      self._fail(stepped_B, failed_B, turn, f"step returned {out!r:.200}, not a HostStep of {B} rows")
    for b in np.flatnonzero(stepped_B & ~failed_B):
      try:  # the one per-row isolation point for host values: a bad value ends its own episode
        values = row_values(*(col[b] for col in columns))
      except Exception as e:  # noqa: BLE001  (whatever the env put in the row: even comparing it may raise)
        message = e.args[0] if isinstance(e, BadRow) else f"garbage from step: {e!r:.200}"
        self._fail(_one(b, B), failed_B, turn, message)
        continue
      reward_B[b], term_B[b], trunc_B[b], info["success"][b], info["valid_action"][b] = values
    return reward_B, term_B, trunc_B, info

  def _observations(self, texts: Sequence, rows_B: np.ndarray, failed_B: np.ndarray, turn: int) -> Tokens:
    """The observation texts of rows_B as Tokens [B, obs_len] (cut to obs_len); unusable rows fail."""
    B, K = self.B, self.env.obs_len
    ids_BxK, lengths_B = np.full((B, K), self.codec.pad_id, np.int32), np.zeros((B,), np.int32)
    if not _sized(texts, B):
      self._fail(rows_B, failed_B, turn, f"got {texts!r:.200} where {B} observations were due")
    for b in np.flatnonzero(rows_B & ~failed_B):
      text = texts[b]
      if isinstance(text, RowError) or not isinstance(text, str):
        self._fail(_one(b, B), failed_B, turn, text.message if isinstance(text, RowError)
                   else f"observation {text!r:.60} is not a str")
        continue
      try:  # (a prefix long enough for K tokens: encoding a huge text only to cut it is wasteful)
        ids = self.codec.encode(text[:K * self.codec.max_token_bytes])[:K]
      except ValueError as e:
        self._fail(_one(b, B), failed_B, turn, str(e))
        continue
      ids_BxK[b, :len(ids)], lengths_B[b] = ids, len(ids)
    return Tokens(ids_BxK, lengths_B)

  def _record(self, alive_B, reward_B, term_B, trunc_B, revise_B, info: dict) -> dict:
    B = self.B
    info = {k: info.get(k, np.zeros((B,), bool)) for k in ("success", "valid_action", "host_error")}
    return self.runner.record(alive_B, reward_B, term_B, trunc_B, revise_B, info)

  def _texts(self, action: Tokens) -> list[str]:
    ids_BxK, lengths_B = jax.device_get((action.ids, action.length))
    return [self._text(ids[:n]) for ids, n in zip(ids_BxK, lengths_B)]

  def _text(self, ids: np.ndarray) -> str:
    """An action's text: exactly the bytes the in-graph codec sees (special tokens are empty)."""
    raw = b"".join(self._bytes_VxM[i, :self._byte_lengths_V[i]].tobytes() for i in ids)
    return raw.decode("utf-8", errors="replace")


def _branches(revise_B, taken: tuple, other: tuple) -> tuple:
  """(first, revised) env outputs as rollout.attempt_record reads them, from the (reward, success) of
  the stepped branch and of the scored one."""
  (taken_r, taken_s), (other_r, other_s) = taken, other
  pick = functools.partial(np.where, revise_B)
  first = (None, None, pick(other_r, taken_r), None, None, {"success": pick(other_s, taken_s)})
  revised = (None, None, pick(taken_r, other_r), None, None, {"success": pick(taken_s, other_s)})
  return first, revised


def _sized(col, n: int) -> bool:
  return hasattr(col, "__len__") and hasattr(col, "__getitem__") and len(col) == n


def _one(b: int, B: int) -> np.ndarray:
  return np.arange(B) == b


@functools.lru_cache(maxsize=32)
def make_host_collect(lm: LM, env: HostEnv, tokenizer_or_codec: Tokenizer | Codec, agent: AgentConfig,
                      n_tasks: int, group_size: int = 1, sampling: SamplingConfig = SamplingConfig(),
                      mesh: Mesh | None = None) -> HostCollect:
  """`collect(params, key, seeds=None) -> Trajectory` stepping `env` on the host between turns.

  The Trajectory has the in-graph rollout's layout; `info` holds success, valid_action and
  host_error [B, N]; `episode` adds host_error [B]. The jitted turn pieces compile once.
  """
  codec = tokenizer_or_codec if isinstance(tokenizer_or_codec, Codec) else Codec.from_tokenizer(tokenizer_or_codec)
  return HostCollect(lm, env, codec, agent, n_tasks, group_size, sampling, mesh)
