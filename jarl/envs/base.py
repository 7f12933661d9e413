"""The TextEnv protocol, the environment registry, and host-side episode helpers.

A TextEnv is pure JAX and vmappable; it speaks tokens through a `Codec` built once
from the tokenizer, so observations are rendered and free-text actions are parsed
inside the compiled graph for any tokenizer:

    state, obs = env.reset(key)                                   # obs: Tokens [obs_len]
    state, obs, reward, terminated, truncated, info = env.step(state, action, key)

`terminated` means the task ended (solved, failed for good); `truncated` means the
turn limit cut it off. `info` always holds `valid_action` (the action parsed) and
`success` (the episode's goal is reached), plus env-specific scalars; every value has
a fixed shape and dtype so rollouts can scan over it. There is no auto-reset: a
rollout runs each episode once and masks steps after the end.

An env that sets `reads_plan = True` also gets the policy's PLAN segment for the
turn: `step(state, action, key, plan=Tokens)` (e.g. `subgoal_maze` checks a stated
subgoal); the rollout passes it only to such envs.

Each env also provides, on the host, `expert_action(state) -> str` (a solver's next
action for one unbatched state, for supervised warm starts and tests) and
`render(state) -> str` (for logs).
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, ClassVar

import jax

from jarl.envs.codec import Codec, Tokens
from jarl.envs.user_module import import_module
from jarl.tokenizer import ByteTokenizer, Tokenizer

INFO_KEYS = ("valid_action", "success")


class TextEnv(abc.ABC):
  """Base class: subclasses set the static sizes in __init__ and implement reset/step."""

  name: ClassVar[str] = ""
  #: Task description shown once before the first observation (the agent template uses it).
  instructions: str = ""
  #: Inclusive bounds of the per-step reward, for checks and normalisation.
  reward_range: tuple[float, float] = (0.0, 1.0)
  #: True if step() takes the turn's PLAN segment as `plan=Tokens`.
  reads_plan: ClassVar[bool] = False

  def __init__(self, codec: Codec, *, obs_len: int, action_len: int, max_turns: int):
    self.codec = codec
    self.obs_len = obs_len
    self.action_len = action_len
    self.max_turns = max_turns

  @abc.abstractmethod
  def reset(self, key: jax.Array) -> tuple[Any, Tokens]:
    """A new task from the key: (state, first observation)."""

  @abc.abstractmethod
  def step(self, state: Any, action: Tokens, key: jax.Array):
    """(state, obs, reward f32, terminated bool, truncated bool, info dict)."""

  @abc.abstractmethod
  def expert_action(self, state: Any) -> str:
    """Host side: a solver's next action text for one unbatched state."""

  @abc.abstractmethod
  def render(self, state: Any) -> str:
    """Host side: a human-readable picture of one unbatched state."""

  def forbidden(self, state: Any, action: Tokens) -> jax.Array:
    """In graph: True if the action must not be carried out (for the action guard, `jarl.envs.shield`).

    Envs with rules to guard override this; the base class has none.
    """
    raise NotImplementedError(f"{type(self).__name__} defines no forbidden actions")

  def action_tokens(self, text: str) -> Tokens:
    """Host side: an action string as a padded Tokens buffer of size action_len."""
    return self.codec.tokens(text, self.action_len)

  @functools.cached_property
  def jitted(self):
    """reset and step compiled once per env instance (host-side helpers call them often)."""
    return jax.jit(self.reset), jax.jit(self.step)

  def expert_plan(self, state: Any) -> str | None:
    """Host side: the expert's PLAN text for one state (None: the env has no expert planner).

    Envs that read plans check it; for the others it is context the warm start teaches.
    """
    return None

  def plan_tokens(self, text: str) -> Tokens:
    """Host side: a PLAN string as the Tokens buffer `step(..., plan=)` expects."""
    return self.codec.tokens(text, max(1, len(self.codec.encode(text))))

  def expert_episode(self, key: jax.Array) -> list[dict]:
    """Host side: one full expert episode as a list of turns.

    Each turn is {"obs": Tokens, "obs_text", "action_text", "reward", "terminated",
    "truncated", "info"}, plus "plan_text" when the env has an expert planner (passed to
    `step` when it reads plans); the obs Tokens are exactly what the env emits in the graph.
    """
    reset, step = self.jitted
    key, reset_key = jax.random.split(key)
    state, obs = reset(reset_key)
    turns = []
    for _ in range(self.max_turns):
      host = jax.device_get(state)
      action_text = self.expert_action(host)
      plan_text = self.expert_plan(host)
      plan = (self.plan_tokens(plan_text),) if self.reads_plan and plan_text is not None else ()
      key, step_key = jax.random.split(key)
      state, next_obs, reward, terminated, truncated, info = step(state, self.action_tokens(action_text), step_key,
                                                                  *plan)
      turns.append(dict(obs=obs, obs_text=self.codec.text(obs), action_text=action_text,
                        reward=float(reward), terminated=bool(terminated), truncated=bool(truncated),
                        info=jax.device_get(info)))
      if plan_text is not None:
        turns[-1]["plan_text"] = plan_text
      obs = next_obs
      if terminated or truncated:
        break
    return turns


_REGISTRY: dict[str, type[TextEnv]] = {}


def register(name: str) -> Callable[[type[TextEnv]], type[TextEnv]]:
  """Class decorator: `@register("countdown")` makes the env available to `make`.

  The same class defined again (a re-run notebook cell, a re-imported file: the same module and
  qualified name) replaces the old one; another class under a taken name is an error naming both.
  """
  def add(cls):
    if name in _REGISTRY and not redefines(_REGISTRY[name], cls):
      raise ValueError(f"environment {name!r} is already registered by {qualified_name(_REGISTRY[name])}; "
                       f"{qualified_name(cls)} needs another name")
    cls.name = name
    _REGISTRY[name] = cls
    return cls
  return add


def qualified_name(obj) -> str:
  return f"{obj.__module__}.{obj.__qualname__}"


def redefines(old, new) -> bool:
  """True when `new` is `old` defined again (same module and qualified name), e.g. by a re-run cell."""
  return qualified_name(old) == qualified_name(new)


def registered() -> list[str]:
  _import_builtin_envs()
  return sorted(_REGISTRY)


def make(name: str, tokenizer: Tokenizer | None = None, codec: Codec | None = None, guard: bool = False,
         split: str = "train", module: str = "", **kwargs):
  """An environment by name: `make("frozenlake", size=4)`; byte tokenizer by default.

  `module` (a .py file or a dotted module name; `config.env.module` in a run config) is imported
  first, so the envs it registers can be made (`jarl.envs.user_module`).
  Names of host environments (`jarl.envs.host`: "python_tool", "rg:<reasoning-gym dataset>") give
  that host env carrying the codec, so the rollout and the trainer take it like an in-graph env;
  `split="eval"` makes it draw held-out tasks (in-graph envs draw them from their own key stream).
  `guard=True` wraps an in-graph env in the action guard (`jarl.envs.shield.Shield`).
  """
  _import_builtin_envs()
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  if module:
    loaded = import_module(module)
  if codec is None:
    codec = Codec.from_tokenizer(tokenizer or ByteTokenizer())
  if name not in _REGISTRY:
    from jarl.envs import host  # noqa: PLC0415  (host builds on the rollout, which builds on this module)
    if not host.is_host(name):
      if module:
        own = sorted(n for n, cls in _REGISTRY.items() if cls.__module__ == loaded.__name__)
        raise ValueError(f"environment {name!r} is not registered by module {module!r} ({loaded.__file__}); "
                         f"it registers {own or 'none'} (`@jarl.envs.register(name)` on a TextEnv class)")
      raise ValueError(f"unknown environment {name!r}; available: {sorted(_REGISTRY)}, host envs "
                       f"{host.registered()}")
    if guard:
      raise ValueError(f"guard=True needs an in-graph env with forbidden actions; {name!r} is a host env")
    env = host.make_host(name, **kwargs)
    env.codec, env.split = codec, split
    return env
  env = _REGISTRY[name](codec, **kwargs)
  if guard:
    from jarl.envs.shield import Shield
    env = Shield(env)
  return env


def _import_builtin_envs() -> None:
  import jarl.envs  # noqa: F401  (importing the package registers the built-in envs)

