"""Host environments: the turn-by-turn bridge, failure isolation, the Python tool env, the gym adapter."""

import threading

import jax
import numpy as np
import pytest

from jarl import envs, models
from jarl.agent import AgentConfig, Segment
from jarl.envs.host import GymTextEnv, HostCollect, HostEnv, HostStep, PerEpisodeHostEnv, make_host, make_host_collect
from jarl.envs.python_tool import make_task
from jarl.envs.sandbox import Limits
from jarl.learner import rollout_metrics
from jarl.forward import replay_logprobs
from jarl.rollout import make_collect
from jarl.tokenizer import ByteTokenizer
import toy_env  # noqa: F401  (registers guess_digit)

CFG = models.preset("tiny", d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
N_TASKS, GROUP = 4, 2
AGENT = AgentConfig(plan_budget=2, critique_budget=2, revise_budget=2)  # every segment on
SHAPE = dict(instructions="Go.", obs_len=8, action_len=3, max_turns=2)  # the act-only tests share programs
FAST = Limits(wall_s=1.0, cpu_s=1, memory_mb=128)


class ShortGuess(toy_env.GuessDigit):
  """guess_digit whose episodes all end by turn 2 of 3 (the last turn is idle for every row) and
  that pays 0.5 for an action whose first byte is an even ASCII one (so that a random model's
  two critique branches earn different rewards; ASCII survives the host's text round trip)."""

  def step(self, state, action, key):
    bytes_K, length = self.codec.to_bytes(action, 8)
    bonus = 0.5 * ((length > 0) & (bytes_K[0] < 128) & (bytes_K[0] % 2 == 0))
    state, obs, reward, term, trunc, info = super().step(state, action, key)
    return state, obs, reward + bonus, term, trunc | (state.turn >= 2), info


ENV = ShortGuess(envs.Codec.from_tokenizer(ByteTokenizer()), max_turns=3)


@pytest.fixture(scope="module")
def lm():
  return models.create(CFG, seed=0)


class TextEnvHost(HostEnv):
  """A pure TextEnv behind the HostEnv protocol, stepped eagerly per row on the decoded strings.

  Seed i plays the task of `task_keys[i]`, so the host rollout can replay the in-graph one.
  """

  def __init__(self, env, task_keys):
    self.env, self.task_keys = env, task_keys
    self.instructions, self.max_turns = env.instructions, env.max_turns
    self.obs_len, self.action_len = env.obs_len, env.action_len

  def reset(self, seeds):
    reset, _ = self.env.jitted
    self.states, obs = map(list, zip(*(reset(self.task_keys[s]) for s in seeds)))
    return [self.env.codec.text(o) for o in obs]

  def step(self, actions, live):
    return self._rows(actions, live, advance=True)

  def score(self, actions, live):  # the pure env's step from the same state: a critique's other branch
    return self._rows(actions, live, advance=False)

  def _rows(self, actions, live, advance):
    _, step = self.env.jitted
    codec, rows = self.env.codec, []
    for b, action in enumerate(actions):
      if not live[b]:
        rows.append(("", 0.0, False, False, {}))
        continue
      ids = codec.encode(action)[:self.action_len]  # cut: invalid UTF-8 came back as U+FFFD (3 bytes)
      tokens = envs.Tokens(np.pad(ids, (0, self.action_len - len(ids)), constant_values=codec.pad_id), len(ids))
      state, obs, reward, term, trunc, info = step(self.states[b], tokens, jax.random.key(0))
      if advance:
        self.states[b] = state
      rows.append((codec.text(obs), float(reward), bool(term), bool(trunc), {k: bool(v) for k, v in info.items()}))
    return HostStep(*map(list, zip(*rows)))


def _task_keys(key):
  return jax.random.split(jax.random.split(key, 3)[0], N_TASKS)  # the in-graph rollout's task keys


@pytest.fixture(scope="module")
def pair(lm):
  """(in-graph, host) trajectories of the same episodes."""
  key = jax.random.key(1)
  want = make_collect(lm, ENV, AGENT, N_TASKS, GROUP)(lm.params, key)
  collect = make_host_collect(lm, TextEnvHost(ENV, _task_keys(key)), ENV.codec, AGENT, N_TASKS, GROUP)
  got = collect(lm.params, key, seeds=range(N_TASKS))
  assert collect.last_errors == []
  return jax.device_get(want), got


def test_host_rollout_equals_in_graph_rollout(pair):
  want, got = pair
  got = jax.device_get(got)
  for field in ("tokens", "positions", "valid", "segment", "turn", "loss_mask", "reward", "turn_reward",
                "turn_live", "terminated", "truncated", "verdict"):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
  np.testing.assert_allclose(got.logprob, want.logprob, atol=1e-5)
  live = want.turn_live
  for key in ("success", "valid_action"):
    np.testing.assert_array_equal(got.info[key] & live, want.info[key] & live, err_msg=key)
  for key, value in want.episode.items():
    np.testing.assert_allclose(got.episode[key], value, err_msg=key)
  assert not got.info["host_error"].any() and not got.episode["host_error"].any()
  assert not live[:, 2].any() and (want.verdict == 1).any()  # an idle last turn; some REVISE segments
  # both branches of every turn: the stepped one and the scored one (HostEnv.score)
  assert set(got.attempts) == set(want.attempts) == {"first_reward", "first_success", "revised_reward",
                                                     "revised_success"}
  for key, value in want.attempts.items():
    np.testing.assert_array_equal(got.attempts[key], value, err_msg=key)
  assert (want.attempts["first_reward"] != want.attempts["revised_reward"]).any()  # the branches differ somewhere


def test_host_trajectory_replays_its_logprobs(lm, pair):
  traj = pair[1]
  replayed = jax.jit(lambda p, t: replay_logprobs(lm, p, t))(lm.params, traj)
  mask = np.asarray(traj.loss_mask)
  assert mask.any()
  np.testing.assert_allclose(np.asarray(replayed)[mask], np.asarray(traj.logprob)[mask], atol=1e-4)


class FaultyEpisode:
  """Counts turns; `fault` makes it raise, hang, or return garbage at reset or at the first step."""

  def __init__(self, faults):
    self.faults = faults

  def reset(self, seed):
    self.fault, self.turn = self.faults.get(seed), 0
    if self.fault == "reset":
      raise RuntimeError("reset exploded")
    return f"seed {seed}"

  def step(self, action):
    self.turn += 1
    if self.fault == "raise":
      raise ValueError("step exploded")
    if self.fault == "hang":
      threading.Event().wait(3.0)
    if self.fault == "nan":
      return "x", float("nan"), False, False, {}
    if self.fault == "type":
      return 42, 0.0, False, False, {}
    if self.fault == "arity":
      return "x", 0.0
    if self.fault == "bigint":  # finite in Python, no float at all
      return "x", 10 ** 400, False, False, {}
    if self.fault == "float32":  # finite in float64, inf in the float32 the learner uses
      return "x", 1e300, False, False, {}
    if self.fault == "array":
      return "x", 1.0, False, False, {"success": np.array([True, False])}
    return f"turn {self.turn}", 0.5, False, False, {"valid_action": True}


FAULTS = {1: "reset", 2: "raise", 3: "hang", 4: "nan", 5: "type", 6: "arity", 7: "bigint", 8: "float32", 9: "array"}


def test_failing_rows_end_with_a_host_error_and_others_are_unaffected(lm, caplog):
  faults = {}
  env = PerEpisodeHostEnv(lambda: FaultyEpisode(faults), **SHAPE, episode_timeout_s=0.5)
  collect = make_host_collect(lm, env, ENV.codec, AgentConfig(), n_tasks=12, group_size=1)
  key, seeds = jax.random.key(2), list(range(12))
  healthy = jax.device_get(collect(lm.params, key, seeds))
  assert collect.last_errors == [] and healthy.episode["turns"].tolist() == [2] * 12
  faults.update(FAULTS)
  traj = jax.device_get(collect(lm.params, key, seeds))
  bad = np.isin(seeds, list(FAULTS))
  assert sorted(e.row for e in collect.last_errors) == sorted(FAULTS)
  messages = {e.row: e.message for e in collect.last_errors}
  assert "reset exploded" in messages[1] and "step exploded" in messages[2] and "TimeoutError" in messages[3]
  assert "reward" in messages[4] and "obs" in messages[5] and "TypeError" in messages[6]
  assert "reward 1000" in messages[7] and "reward 1e+300" in messages[8] and "info['success']" in messages[9]
  np.testing.assert_array_equal(traj.episode["host_error"], bad)
  np.testing.assert_array_equal(traj.info["host_error"][:, 0], bad)
  assert float(rollout_metrics(traj)["episode/host_error"]) == pytest.approx(bad.mean())
  assert f"{len(FAULTS)} of 12 episodes ended on an env failure" in caplog.text and "reset exploded" in caplog.text
  np.testing.assert_array_equal(traj.truncated[bad, 0], True)
  np.testing.assert_array_equal(traj.turn_live[bad], [[True, False]] * bad.sum())
  np.testing.assert_array_equal(traj.turn_reward[bad], 0.0)
  for field in ("tokens", "valid", "loss_mask", "logprob", "reward", "turn_reward", "turn_live", "truncated"):
    np.testing.assert_array_equal(getattr(traj, field)[~bad], getattr(healthy, field)[~bad], err_msg=field)
  faults.clear()  # the run goes on: rebuilt episodes play normally
  again = collect(lm.params, key, seeds)
  assert collect.last_errors == [] and not np.asarray(again.episode["host_error"]).any()


class BatchedEnv(HostEnv):
  """A batched env whose whole step call fails in the way `mode` says."""
  timeout_s, mode = 0.5, None

  def __init__(self):
    for name, value in SHAPE.items():
      setattr(self, name, value)

  def reset(self, seeds):
    return ["start"] * len(seeds)

  def step(self, actions, live):
    B = len(actions)
    if self.mode == "raise":
      raise OSError("backend down")
    if self.mode == "hang":
      threading.Event().wait(3.0)
    n = B - 1 if self.mode == "short" else B
    return HostStep(["ok"] * n, [1.0] * n, [False] * n, [False] * n, [{}] * n)


BATCHED = BatchedEnv()


@pytest.mark.parametrize("mode", ["raise", "hang", "short"])
def test_a_failing_batched_step_ends_every_live_episode(mode, lm):
  collect = make_host_collect(lm, BATCHED, ENV.codec, AgentConfig(), n_tasks=8, group_size=1)
  BATCHED.mode = mode
  traj = jax.device_get(collect(lm.params, jax.random.key(0)))
  assert [e.row for e in collect.last_errors] == list(range(8)) and all(e.turn == 0 for e in collect.last_errors)
  assert traj.episode["host_error"].all() and traj.truncated[:, 0].all() and (traj.turn_reward == 0).all()
  after = traj.turn > 0  # the skipped last turn holds idle slots, as in the in-graph rollout
  assert not (traj.valid & after).any() and (traj.tokens[~traj.valid] == ENV.codec.pad_id).all()
  BATCHED.mode = None
  traj = jax.device_get(collect(lm.params, jax.random.key(0)))
  assert not traj.episode["host_error"].any() and (traj.turn_reward == 1).all()


class RowObservations(BatchedEnv):
  """Each row's first observation names its row: the G rows of a task do not share it."""

  def reset(self, seeds):
    return [f"row {b}" for b in range(len(seeds))]


def test_host_rows_of_a_task_with_their_own_observations_keep_them(lm):
  """The prompt is prefilled once per task only when its rows got the same first observation."""
  collect = make_host_collect(lm, RowObservations(), ENV.codec, AgentConfig(), n_tasks=2, group_size=4)
  traj = jax.device_get(collect(lm.params, jax.random.key(0)))
  for b in range(8):
    prompt = traj.tokens[b][traj.valid[b] & (traj.segment[b] == int(Segment.PROMPT))]
    assert ENV.codec.tokenizer.decode(prompt.tolist()).endswith(f"row {b}"), b


def test_python_tool_env_episodes():
  env = make_host("python_tool", max_turns=2, limits=FAST)
  question, answer = make_task(2)
  assert env.reset([2, 2, 2]) == [f"task: {question}"] * 3
  out = env.step([f"run: {question.removeprefix('compute ')}", "hello", "run: while True: pass"], [True] * 3)
  assert out.obs[0] == f"out: {answer}" and out.obs[1].startswith("invalid") and "TimeoutError" in out.obs[2]
  assert [i["valid_action"] for i in out.info] == [True, False, True] and not any(out.terminated)
  out = env.step([f"answer: {answer}", f"answer: {answer + 1}", "run: 1"], [True] * 3)
  assert out.reward == [1.0, 0.0, 0.0] and out.terminated == [True, True, False] and out.truncated[2]
  assert [i["success"] for i in out.info] == [True, False, False]


class GuessNumber:
  """A duck-typed gymnasium-style text env: guess 1..20, told higher/lower."""

  def reset(self, seed=None):
    self.secret = np.random.default_rng(seed).integers(1, 21)
    return "guess 1-20", {}

  def step(self, action):
    guess = int(action) if action.strip().isdecimal() else -1
    if guess == self.secret:
      return "correct", 1.0, True, False, {"success": True, "valid_action": True}
    hint = "invalid" if guess < 0 else "higher" if guess < self.secret else "lower"
    return hint, 0.0, False, False, {"success": False, "valid_action": guess >= 0}


def test_gym_text_env_adapter(lm):
  env = GymTextEnv(GuessNumber, **SHAPE)
  assert env.reset([0, 1]) == ["guess 1-20", "guess 1-20"]
  low, high, live = [1, 1], [20, 20], [True, True]
  for _ in range(5):  # binary search through the adapter (not limited by max_turns: that is the bridge's)
    guesses = [(lo + hi) // 2 for lo, hi in zip(low, high)]
    out = env.step([str(g) for g in guesses], live)
    for b in range(2):
      if out.obs[b] == "higher":
        low[b] = guesses[b] + 1
      elif out.obs[b] == "lower":
        high[b] = guesses[b] - 1
      elif live[b]:
        assert out.obs[b] == "correct" and out.reward[b] == 1.0 and out.terminated[b]
        live[b] = False
  assert live == [False, False]
  traj = make_host_collect(lm, env, ENV.codec, AgentConfig(), n_tasks=4, group_size=2)(lm.params, jax.random.key(0))
  assert np.asarray(traj.turn_live)[:, 0].all() and not np.asarray(traj.episode["host_error"]).any()
  assert (np.asarray(traj.terminated | traj.truncated).sum(1) == 1).all()


def test_envs_make_gives_host_envs_that_the_rollout_and_the_learner_take(lm):
  """`envs.make` builds host envs with their codec; make_collect and make_iteration take them like in-graph envs."""
  from jarl import learner
  env = envs.make("python_tool", tokenizer=ByteTokenizer(), max_turns=2)
  held_out = envs.make("python_tool", tokenizer=ByteTokenizer(), split="eval", max_turns=2)
  assert isinstance(env, HostEnv) and env.codec is not None and (env.split, held_out.split) == ("train", "eval")
  with pytest.raises(ValueError, match="host env"):
    envs.make("python_tool", guard=True)
  with pytest.raises(ValueError, match=r"unknown environment 'python_tol'.*host envs \['python_tool', 'rg:<name>'\]"):
    envs.make("python_tol")
  agent = AgentConfig(act_budget=8)
  collect = make_collect(lm, env, agent, 2, GROUP)
  assert isinstance(collect, HostCollect) and collect.codec is env.codec
  optim = learner.OptimConfig(lr=1e-3)
  iteration = learner.make_iteration(collect, learner.make_update(lm, learner.AlgoConfig(), optim, GROUP))
  state = learner.init_state(lm, optim)
  state, metrics, traj = iteration(state)
  assert int(state.step) == 1 and traj.tokens.shape[0] == 2 * GROUP
  assert {"episode/success", "policy/entropy", "policy/grad_norm"} <= set(metrics)
