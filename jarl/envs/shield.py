"""Action guards: a shield (Alshiekh et al. 2018, "Safe RL via Shielding") in the graph.

    env = envs.make("frozenlake", size=4, guard=True)      # = Shield(FrozenLake(...))

An env that can judge an action declares `forbidden(state, action) -> bool` (for
frozenlake: a move into a hole). The shield checks every action before the env steps:
a forbidden action is not carried out. The state stays as it was, the observation is
shown again, the turn counts (so the turn limit still applies), the reward and cost
are 0, and `info["guarded"]` records the block, so the trajectory and the metrics show
how often the guard fired and the policy learns that blocked turns are wasted. The
guard judges the action as chosen: on a slippery lake the ice may still carry the
player into a hole after an allowed move (and that costs).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jarl.envs.base import TextEnv
from jarl.envs.codec import Tokens

Array = jax.Array


@flax.struct.dataclass
class ShieldState:
  inner: object  # the wrapped env's state
  obs: Tokens  # its current observation (shown again after a blocked action)
  turn: Array  # turns taken, blocked ones included


class Shield(TextEnv):
  """Wraps an env that defines `forbidden`; blocked actions leave the episode where it was."""

  def __init__(self, env: TextEnv):
    if type(env).forbidden is TextEnv.forbidden:
      raise ValueError(f"environment {env.name!r} defines no forbidden(state, action): nothing to guard")
    super().__init__(env.codec, obs_len=env.obs_len, action_len=env.action_len, max_turns=env.max_turns)
    self.env = env
    self.name, self.instructions, self.reward_range = env.name, env.instructions, env.reward_range
    self.reads_plan = env.reads_plan

  def reset(self, key: Array) -> tuple[ShieldState, Tokens]:
    state, obs = self.env.reset(key)
    return ShieldState(state, obs, jnp.int32(0)), obs

  def step(self, state: ShieldState, action: Tokens, key: Array, **kwargs):
    blocked = self.env.forbidden(state.inner, action)
    inner, obs, reward, terminated, truncated, info = self.env.step(state.inner, action, key, **kwargs)
    keep = lambda old, new: jnp.where(blocked, old, new)  # noqa: E731
    turn = state.turn + 1
    info = {k: keep(jnp.zeros_like(v), v) for k, v in info.items()} | {
        "valid_action": info["valid_action"] | blocked, "guarded": blocked}
    terminated = ~blocked & terminated
    truncated = ~terminated & (keep(False, truncated) | (turn >= self.max_turns))
    new = ShieldState(jax.tree.map(keep, state.inner, inner), jax.tree.map(keep, state.obs, obs), turn)
    return new, new.obs, keep(0.0, reward), terminated, truncated, info

  def forbidden(self, state: ShieldState, action: Tokens) -> Array:
    return self.env.forbidden(state.inner, action)

  def expert_action(self, state: ShieldState) -> str:
    return self.env.expert_action(state.inner)

  def expert_plan(self, state: ShieldState) -> str | None:
    return self.env.expert_plan(state.inner)

  def render(self, state: ShieldState) -> str:
    return self.env.render(state.inner)
