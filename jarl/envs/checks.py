"""The contracts every TextEnv must keep, checked on a real env: `jarl.envs.check(env)`.

    envs.check(envs.make("guess_number"))     # None, or a ContractError naming the broken contract

`check` runs them all; each is also a function of its own (jarl's env tests call them):
  sizes            obs_len, action_len, max_turns are positive ints; reward_range is (low <= high)
  contract         reset and step under jit(vmap) on fuzzed actions (random token ids, random
                   strings): obs are int32 Tokens [B, obs_len] of in-vocabulary ids, rewards
                   float32 [B] finite and in reward_range, terminated / truncated bool [B], info
                   holds valid_action and success and every entry is a finite [B] array, and every
                   episode ends (terminated or truncated) within max_turns
  jit == eager     reset and step give the same outputs jitted and not
  vmap == single   a vmapped batch equals the unbatched calls row by row
  expert           the host-side expert's actions are valid at every turn and solve every episode
A failure raises `ContractError` (an AssertionError) whose message names the env and the contract.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs.base import TextEnv
from jarl.envs.codec import Tokens

FUZZ_ALPHABET = "0123456789+-*/()=,. \nudlrnoeswatyghkpvx<>[]#@ABC"


class ContractError(AssertionError):
  """An env breaks a TextEnv contract; the message names the env and the contract."""


def _require(ok, env: TextEnv, contract: str, detail) -> None:
  if not ok:
    raise ContractError(f"{_describe(env)} breaks the {contract!r} contract: {detail}")


def _describe(env: TextEnv) -> str:
  return f"environment {env.name or '(unregistered)'!r} ({type(env).__module__}.{type(env).__qualname__})"


def check(env: TextEnv, batch: int = 16, seed: int = 0, expert_episodes: int = 2) -> None:
  """Run every contract on `env` (about a compile of reset and step, a few times).

  `expert_episodes=0` skips the expert check (an env without a solver); the other checks
  then step fuzzed actions only. Raises ContractError naming the first broken contract; an
  exception inside reset / step / the expert is re-raised as one, naming the check it broke.
  """
  if not isinstance(env, TextEnv):
    raise TypeError(f"jarl.envs.check checks in-graph TextEnvs; got {type(env).__name__} (host envs are stepped "
                    "in Python: run a few episodes of it instead)")

  def fuzz() -> Tokens:
    return _fuzz_actions(env, jax.random.key(seed), batch, np.random.default_rng(seed))

  def one_step() -> Tokens | None:  # None: the expert's action
    return None if expert_episodes else jax.tree.map(lambda x: x[0], fuzz())

  stages = [("sizes", lambda: check_sizes(env)),
            ("contract", lambda: check_contract(env, batch, seed)),
            ("jit == eager", lambda: check_jit_matches_eager(env, seed, one_step())),
            ("vmap == single", lambda: check_vmap_matches_single(env, fuzz(), seed))]
  if expert_episodes:
    stages.append(("expert", lambda: check_expert_solves(env, expert_episodes, seed)))
  for contract, run in stages:
    try:
      run()
    except ContractError:
      raise
    except Exception as e:  # noqa: BLE001  (a crash in the env's code breaks the contract being checked)
      raise ContractError(f"{_describe(env)} breaks the {contract!r} contract: {type(e).__name__}: {e}") from e


def check_sizes(env: TextEnv) -> None:
  for name in ("obs_len", "action_len", "max_turns"):
    value = getattr(env, name, None)
    _require(isinstance(value, (int, np.integer)) and value >= 1, env, "sizes",
             f"{name}={value!r} must be a positive int (set it in __init__ through TextEnv.__init__)")
  low, high = env.reward_range
  _require(low <= high, env, "sizes", f"reward_range={env.reward_range!r} must be (low, high) with low <= high")
  _require(isinstance(env.instructions, str), env, "sizes", f"instructions must be a str, got {env.instructions!r}")


def _fuzz_actions(env: TextEnv, key, batch: int, rng: np.random.Generator) -> Tokens:
  """Half the rows random token ids, half random strings over a parser-friendly alphabet."""
  ids = jax.random.randint(key, (batch, env.action_len), 0, env.codec.tokenizer.vocab_size)
  lengths = rng.integers(0, env.action_len + 1, size=batch)
  rows = []
  for b in range(batch):
    if b % 2:
      text = "".join(rng.choice(list(FUZZ_ALPHABET), size=rng.integers(0, env.action_len + 1)))
      t = env.codec.tokens(text[:env.action_len], env.action_len)
      rows.append((np.asarray(t.ids), int(t.length)))
    else:
      rows.append((np.asarray(ids[b]), int(lengths[b])))
  return Tokens(jnp.asarray(np.stack([r[0] for r in rows]), jnp.int32), jnp.asarray([r[1] for r in rows], jnp.int32))


def check_contract(env: TextEnv, batch: int = 16, seed: int = 0) -> None:
  """Fuzz a batch of episodes through max_turns steps, checking shapes, dtypes and ranges."""
  rng = np.random.default_rng(seed)
  reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
  key = jax.random.key(seed)
  state, obs = reset(jax.random.split(key, batch))
  _check_obs(env, obs, batch, "reset")
  done = np.zeros(batch, bool)
  low, high = env.reward_range
  for turn in range(env.max_turns):
    key, k_act, k_step = jax.random.split(key, 3)
    action = _fuzz_actions(env, k_act, batch, rng)
    state, obs, reward, terminated, truncated, info = step(state, action, jax.random.split(k_step, batch))
    where = f"step {turn + 1}"
    _check_obs(env, obs, batch, where)
    _require(reward.shape == (batch,) and reward.dtype == jnp.float32, env, "contract",
             f"{where}: reward must be float32 of shape () per episode, got {reward.dtype} {reward.shape[1:]}")
    r = np.asarray(reward)
    _require(np.isfinite(r).all() and (r >= low - 1e-6).all() and (r <= high + 1e-6).all(), env, "contract",
             f"{where}: rewards {r} must be finite and within reward_range={env.reward_range}")
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
      _require(flag.dtype == jnp.bool_ and flag.shape == (batch,), env, "contract",
               f"{where}: {name} must be bool of shape () per episode, got {flag.dtype} {flag.shape[1:]}")
    for k in ("valid_action", "success"):
      _require(k in info, env, "contract", f"{where}: info lacks {k!r} (it has {sorted(info)})")
    for k, v in info.items():
      _require(np.shape(v) == (batch,), env, "contract",
               f"{where}: info[{k!r}] must be a scalar per episode, got shape {np.shape(v)[1:]}")
      _require(np.isfinite(np.asarray(v, np.float64)).all(), env, "contract", f"{where}: info[{k!r}] is not finite")
    done |= np.asarray(terminated | truncated)
  _require(done.all(), env, "contract", f"every episode must end (terminated or truncated) within max_turns="
           f"{env.max_turns}; {int((~done).sum())} of {batch} fuzzed episodes did not")


def _check_obs(env: TextEnv, obs: Tokens, batch: int, where: str) -> None:
  _require(obs.ids.shape == (batch, env.obs_len) and obs.ids.dtype == jnp.int32, env, "contract",
           f"{where}: obs.ids must be int32 [obs_len={env.obs_len}], got {obs.ids.dtype} {list(obs.ids.shape[1:])}")
  length = np.asarray(obs.length)
  _require(((length >= 0) & (length <= env.obs_len)).all(), env, "contract",
           f"{where}: obs.length {length} must be in [0, obs_len={env.obs_len}]")
  ids = np.asarray(obs.ids)
  _require((ids >= 0).all() and (ids < env.codec.tokenizer.vocab_size).all(), env, "contract",
           f"{where}: obs token ids must be in [0, vocab_size={env.codec.tokenizer.vocab_size})")


def check_expert_solves(env: TextEnv, n_episodes: int = 6, seed: int = 0) -> list[list[dict]]:
  """The expert's actions are valid at every turn and solve every episode; returns the episodes."""
  episodes = []
  for i in range(n_episodes):
    turns = env.expert_episode(jax.random.key(seed + i))
    _require(all(bool(t["info"]["valid_action"]) for t in turns), env, "expert",
             f"an expert action was not valid: {[t['action_text'] for t in turns]}")
    _require(bool(turns[-1]["info"]["success"]) and turns[-1]["terminated"], env, "expert",
             f"the expert did not solve episode {i} within max_turns={env.max_turns} (success and terminated): "
             f"{[t['action_text'] for t in turns]}, last turn {turns[-1]}")
    episodes.append(turns)
  return episodes


def check_jit_matches_eager(env: TextEnv, seed: int = 0, action: Tokens | None = None) -> None:
  """reset and one step (the expert's action unless `action` is given) agree jitted and eager."""
  key = jax.random.key(seed)
  reset, step = env.jitted
  s1, o1 = env.reset(key)
  s2, o2 = reset(key)
  _same(env, "jit == eager", "reset's obs", o1.ids, o2.ids)
  if action is None:
    action = env.action_tokens(env.expert_action(jax.device_get(s1)))
  out1 = env.step(s1, action, key)
  out2 = step(s2, action, key)
  for i, (a, b) in enumerate(zip(jax.tree.leaves(out1), jax.tree.leaves(out2))):
    _same(env, "jit == eager", f"step's output leaf {i}", a, b, atol=1e-6)


def check_vmap_matches_single(env: TextEnv, actions: list[str] | Tokens, seed: int = 5) -> None:
  """A vmapped reset and step over a batch equal the unbatched ones, row by row.

  `actions`: action texts, or a batched Tokens [N, action_len] (e.g. fuzzed ids)."""
  if not isinstance(actions, Tokens):
    actions = jax.tree.map(lambda *xs: jnp.stack(xs), *[env.action_tokens(t) for t in actions])
  n = actions.ids.shape[0]
  keys = jax.random.split(jax.random.key(seed), n)
  states, obs = jax.jit(jax.vmap(env.reset))(keys)
  batched = jax.jit(jax.vmap(env.step))(states, actions, keys)
  reset, step = env.jitted
  for i in range(n):
    state, o = reset(keys[i])
    _same(env, "vmap == single", f"row {i}: reset's obs", o.ids, obs.ids[i])
    single = step(state, jax.tree.map(lambda x: x[i], actions), keys[i])
    for j, (a, b) in enumerate(zip(jax.tree.leaves(single), jax.tree.leaves(batched))):
      _same(env, "vmap == single", f"row {i}: step's output leaf {j}", a, np.asarray(b)[i])


def _same(env: TextEnv, contract: str, what: str, a, b, atol: float | None = None) -> None:
  """Equal arrays (`atol` given: within np.testing.assert_allclose's default rtol and that atol)."""
  try:
    if atol is None:
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    else:
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=atol)
  except AssertionError as e:
    raise ContractError(f"{_describe(env)} breaks the {contract!r} contract: {what} differs:{e}") from None
