"""A user's own env: `envs.check` names the broken contract, registering a redefined class again
replaces it, and `env.module` imports the user's file for `envs.make` and `jarl.train`."""

import os
import sys
import textwrap

import jax.numpy as jnp
import ml_collections
import pytest

from jarl import envs, train
from jarl.envs import base, host, user_module
import toy_env

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import quickstart  # noqa: E402

# A user's file: one-turn "say the digit" env (registered under a name no other test uses).
ENV_FILE = '''
import jax.numpy as jnp
from jarl import envs


@envs.register("{name}")
class SayDigit(envs.TextEnv):
  instructions = "Say {digit}."

  def __init__(self, codec, max_turns: int = 1):
    super().__init__(codec, obs_len=2, action_len=2, max_turns=max_turns)
    self.digits = envs.parse.byte_table([str(d) for d in range(10)])

  def reset(self, key):
    return jnp.int32(0), self.codec.tokens("?", self.obs_len)

  def step(self, state, action, key):
    said = envs.parse.match_choice(*self.codec.to_bytes(action, 4), *self.digits)
    right = said == {digit}
    info = dict(valid_action=said >= 0, success=right)
    return state + 1, self.codec.tokens("", self.obs_len), right.astype(jnp.float32), right, ~right, info

  def expert_action(self, state):
    return "{digit}"

  def render(self, state):
    return "say {digit}"
'''


@pytest.fixture
def registries(monkeypatch, tmp_path):
  """Registrations, imported user files and their modules (files under tmp_path) are undone after the test."""
  monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
  monkeypatch.setattr(host, "_HOST_ENVS", dict(host._HOST_ENVS))
  monkeypatch.setattr(host, "_HOST_PREFIXES", dict(host._HOST_PREFIXES))
  monkeypatch.setattr(user_module, "_LOADED", {})
  yield
  for name, module in list(sys.modules.items()):
    if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
      del sys.modules[name]


def write_env(path, name="say_digit", digit=7):
  path.write_text(textwrap.dedent(ENV_FILE.format(name=name, digit=digit)))
  return path


# ---- envs.check ----------------------------------------------------------------------------------

class RewardTooHigh(toy_env.GuessDigit):
  def step(self, state, action, key):
    state, obs, reward, terminated, truncated, info = super().step(state, action, key)
    return state, obs, reward + 2.0, terminated, truncated, info


class NoSuccess(toy_env.GuessDigit):
  def step(self, state, action, key):
    state, obs, reward, terminated, truncated, info = super().step(state, action, key)
    return state, obs, reward, terminated, truncated, dict(valid_action=info["valid_action"])


class NeverEnds(toy_env.GuessDigit):
  def step(self, state, action, key):
    state, obs, reward, _, _, info = super().step(state, action, key)
    return state, obs, reward, jnp.bool_(False), jnp.bool_(False), info


class WrongExpert(toy_env.GuessDigit):
  def expert_action(self, state):
    return str((int(state.secret) + 1) % 10)


class CrashingStep(toy_env.GuessDigit):
  def step(self, state, action, key):
    raise TypeError("my bug")


def test_check_passes_a_good_env():
  envs.check(envs.make("guess_digit"), batch=4)
  envs.check(envs.make("guess_digit"), batch=4, expert_episodes=0)  # no solver: fuzzed actions only


@pytest.mark.parametrize("cls, contract, detail", [
    (RewardTooHigh, "contract", r"step 1: rewards .* must be finite and within reward_range=\(0.0, 1.0\)"),
    (NoSuccess, "contract", "info lacks 'success'"),
    (NeverEnds, "contract", "every episode must end .* within max_turns=3"),
    (WrongExpert, "expert", "the expert did not solve episode 0"),
    (CrashingStep, "contract", "TypeError: my bug"),
])
def test_check_names_the_broken_contract(cls, contract, detail):
  env = cls(envs.make("guess_digit").codec)
  with pytest.raises(envs.ContractError, match=rf"environment 'guess_digit' \(test_envs_user\.{cls.__name__}\) "
                                               rf"breaks the '{contract}' contract: .*{detail}"):
    envs.check(env, batch=4)


def test_check_names_bad_sizes_and_refuses_host_envs():
  env = toy_env.GuessDigit(envs.make("guess_digit").codec)
  env.obs_len = 0
  with pytest.raises(envs.ContractError, match="'sizes' contract: obs_len=0 must be a positive int"):
    envs.check(env)
  with pytest.raises(TypeError, match="checks in-graph TextEnvs"):
    envs.check(object())


def test_contract_errors_are_assertion_errors():
  """jarl's own env tests run these checks; a ContractError fails them like an assert."""
  assert issubclass(envs.ContractError, AssertionError)


# ---- re-registration -----------------------------------------------------------------------------

def define(base_cls, register, name):
  """What a notebook cell does each time it runs: a new class object, same module and qualified name."""
  @register(name)
  class Redefined(base_cls):
    pass
  return Redefined


def test_register_replaces_a_redefined_class_and_refuses_another(registries):
  first = define(toy_env.GuessDigit, envs.register, "redefined")
  second = define(toy_env.GuessDigit, envs.register, "redefined")  # the cell run again: quietly replaces it
  assert first is not second and base._REGISTRY["redefined"] is second
  assert type(envs.make("redefined")) is second
  with pytest.raises(ValueError, match=r"environment 'redefined' is already registered by "
                                       r"test_envs_user\.define\.<locals>\.Redefined; "
                                       r"test_envs_user\.NeverEnds needs another name"):
    envs.register("redefined")(NeverEnds)
  with pytest.raises(ValueError, match=r"'guess_digit' is already registered by toy_env\.GuessDigit"):
    envs.register("guess_digit")(NeverEnds)


def test_register_host_replaces_a_redefined_class_and_refuses_another(registries):
  first = define(host.HostEnv, host.register_host, "redefined_host")
  second = define(host.HostEnv, host.register_host, "redefined_host")
  assert first is not second and host._HOST_ENVS["redefined_host"] is second
  with pytest.raises(ValueError, match=r"host environment 'redefined_host' is already registered by "
                                       r"test_envs_user\.define\.<locals>\.Redefined; "
                                       r"test_envs_user\.NoSuccess needs another name"):
    host.register_host("redefined_host")(NoSuccess)

  def factory(name, **kwargs):
    return name
  host.register_host_prefix("mine", factory)
  host.register_host_prefix("mine", factory)
  assert "rg:<name>" in host.registered()  # (imports the built-in host envs)
  with pytest.raises(ValueError, match=r"prefix 'rg' is already registered by jarl\.envs\.reasoning_gym\."):
    host.register_host_prefix("rg", factory)


# ---- env.module ----------------------------------------------------------------------------------

def test_make_imports_a_users_file(tmp_path, monkeypatch, registries):
  write_env(tmp_path / "say_digit_env.py")
  monkeypatch.chdir(tmp_path)
  env = envs.make("say_digit", module="say_digit_env.py")  # relative to the working directory
  assert type(env).__module__ == "say_digit_env" and env.instructions == "Say 7."
  envs.check(env, batch=4)
  again = envs.make("say_digit", module=str(tmp_path / "say_digit_env.py"), split="eval")  # imported once
  assert type(again) is type(env)
  write_env(tmp_path / "say_digit_env.py", digit=3)  # the file changed: imported again, its class replaces the old
  assert envs.make("say_digit", module="say_digit_env.py").instructions == "Say 3."
  import say_digit_env  # the same module under its plain name
  assert type(envs.make("say_digit")) is say_digit_env.SayDigit


def test_make_imports_a_dotted_module(tmp_path, monkeypatch, registries):
  (tmp_path / "userpkg").mkdir()
  (tmp_path / "userpkg" / "__init__.py").write_text("")
  write_env(tmp_path / "userpkg" / "digits.py", name="say_digit_dotted")
  monkeypatch.syspath_prepend(str(tmp_path))
  assert type(envs.make("say_digit_dotted", module="userpkg.digits")).__module__ == "userpkg.digits"


def test_env_module_errors_name_the_module(tmp_path, monkeypatch, registries):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError, match=rf"env module 'missing.py': no such file {tmp_path}/missing.py"):
    envs.make("say_digit", module="missing.py")
  with pytest.raises(ModuleNotFoundError, match=r"env module 'nopkg.envs': no module named 'nopkg'"):
    envs.make("say_digit", module="nopkg.envs")
  write_env(tmp_path / "other_env.py", name="say_other")
  with pytest.raises(ValueError, match=r"environment 'say_digit' is not registered by module 'other_env.py' "
                                       rf"\({tmp_path}/other_env.py\); it registers \['say_other'\]"):
    envs.make("say_digit", module="other_env.py")
  (tmp_path / "json.py").write_text("")
  with pytest.raises(ValueError, match="a module named 'json' is already imported .* rename json.py"):
    envs.make("say_digit", module="json.py")
  (tmp_path / "broken_env.py").write_text("import nowhere_to_be_found\n")
  with pytest.raises(ModuleNotFoundError, match="nowhere_to_be_found"):
    envs.make("say_digit", module="broken_env.py")
  assert "broken_env" not in sys.modules


def test_train_builds_an_env_from_a_users_file(tmp_path, monkeypatch, registries):
  """`jarl train --config.env.module=say_digit_env.py --config.env.name=say_digit` builds its run from the
  user's env (test_readme runs an iteration of the README's own env through the same path)."""
  write_env(tmp_path / "say_digit_env.py")
  monkeypatch.chdir(tmp_path)
  c = quickstart.get_config()
  c.env.module, c.env.name, c.env.kwargs = "say_digit_env.py", "say_digit", ml_collections.ConfigDict()
  c.agent.act_budget = 2
  run = train.build(c)
  assert type(run.env).__name__ == type(run.eval_env).__name__ == "SayDigit"
  c.env.name = "say_seven"
  with pytest.raises(ValueError, match="'say_seven' is not registered by module 'say_digit_env.py'"):
    train.build(c)
