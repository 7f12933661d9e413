"""The training run: outputs, workdir safety, exact resume, SIGTERM, config errors, the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import ml_collections
import pytest

from jarl import learner, train
from jarl.metrics import read_jsonl
import toy_env  # noqa: F401  (registers guess_digit)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import quickstart  # noqa: E402


def small_config(workdir, steps=2):
  c = quickstart.get_config()
  c.workdir = str(workdir)
  c.model.overrides = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, mlp_dim=64)
  c.env.name = "guess_digit"
  c.env.kwargs = dict(max_turns=2)
  c.agent.act_budget = 2
  c.rollout.n_tasks, c.rollout.group_size = 2, 4
  c.sft.episodes, c.sft.steps, c.sft.batch_size = 16, 2, 8  # batches divide the 8 (fake) devices
  c.eval.every, c.eval.tasks = 2, 8
  c.train.steps, c.train.checkpoint_every = steps, 1
  c.train.tensorboard = False
  # the tiny model's groups tie (no reward): without these the RL updates would have no gradient to reproduce
  c.algo.entropy_coef, c.algo.filter_zero_variance = 0.01, False
  return c


def rl_records(workdir):
  return [{k: v for k, v in r.items() if not k.startswith("eval/")} for r in read_jsonl(workdir / "metrics.jsonl")
          if r["step"] > 0]


def test_run_writes_its_outputs_and_guards_the_workdir(tmp_path):
  summary = train.train(small_config(tmp_path))
  for name in ("metrics.jsonl", "curves.png", "samples.txt", "summary.json"):
    assert (tmp_path / name).exists(), name
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved["steps"] == 2 and {"success", "return"} <= set(saved["eval_before_rl"]) <= set(saved["final_eval"])
  assert saved == json.loads(json.dumps(summary))
  machine = saved["machine"]  # what it ran on
  assert machine["devices"]["count"] == jax.device_count() and machine["cpu"] and machine["python"]
  assert {"jax", "jaxlib", "flax", "optax", "numpy", "jarl"} <= set(machine["versions"])
  assert "[act]" in (tmp_path / "samples.txt").read_text()
  records = read_jsonl(tmp_path / "metrics.jsonl")
  assert any(r["step"] < 0 and "sft/loss" in r for r in records)  # the warm start is logged
  assert {"policy/entropy", "policy/clip_fraction", "policy/trained_tokens", "episode/valid_action_rate",
          "lr"} <= set(records[-1])
  with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
    train.train(small_config(tmp_path))
  train.train(small_config(tmp_path, steps=1), overwrite=True)
  assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 1


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
  straight, split = tmp_path / "straight", tmp_path / "split"
  train.train(small_config(straight, steps=3))
  train.train(small_config(split, steps=1))
  train.train(small_config(split, steps=3), resume=True)
  assert rl_records(split) == rl_records(straight)
  assert all(r["policy/grad_norm"] > 0 for r in rl_records(straight))  # RL updates that change the params
  bad = small_config(split, steps=4)
  bad.optim.lr = 1.0
  with pytest.raises(ValueError, match=r"cannot resume: the config differs.*\['optim'\]"):
    train.train(bad, resume=True)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
  make_iteration = learner.make_iteration

  def preempted_after_first_step(*args, **kwargs):
    iteration = make_iteration(*args, **kwargs)

    def once(state):
      out = iteration(state)
      os.kill(os.getpid(), signal.SIGTERM)  # the run's handler is installed while the loop runs
      return out
    return once

  monkeypatch.setattr(learner, "make_iteration", preempted_after_first_step)
  with pytest.raises(SystemExit, match="stopped by signal 15 at step 1"):
    train.train(small_config(tmp_path, steps=3))
  monkeypatch.undo()
  assert train.train(small_config(tmp_path, steps=3), resume=True)["steps"] == 3


def test_config_errors_name_the_valid_choices(tmp_path):
  c = small_config(tmp_path)
  c.algo.advantage = "grpoo"
  with pytest.raises(ValueError, match="unknown advantage estimator 'grpoo'; available"):
    train.build(c)
  c = small_config(tmp_path)
  c.agent.unknown_key = 3
  with pytest.raises(ValueError, match=r"unknown AgentConfig keys \['unknown_key'\]; valid"):
    train.build(c)
  c = small_config(tmp_path)
  c.env.name = "frozen"
  with pytest.raises(ValueError, match="unknown environment 'frozen'; available"):
    train.build(c)


def test_one_validation_pass_names_every_bad_field_before_any_work(tmp_path):
  c = small_config(tmp_path)
  c.optim.lr = float("inf")
  c.train.checkpoint_every = 0
  c.eval.every = -1
  c.rollout.group_size = 3  # a batch of 2 x 3 = 6 rows, which 4 minibatches do not split
  c.algo.minibatches = 4
  c.sampling.top_p = 1.5
  c.agent.critique_budget = "2"
  c.sft.batch_size = 32  # more than sft.episodes=16
  with pytest.raises(ValueError) as error:
    train.train(c)
  message = str(error.value)
  for expected in ("7 problem(s)", "optim.lr=inf: must be finite", "train.checkpoint_every=0: must be in [1, inf]",
                   "eval.every=-1", "algo.minibatches=4: must divide the rollout batch", "= 6",
                   "sampling.top_p=1.5: must be in (0, 1]", "agent.critique_budget='2': must be int",
                   "sft.batch_size=32: must be at most sft.episodes=16"):
    assert expected in message, (expected, message)
  assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing was started or written
  c = small_config(tmp_path)
  c.env.kwargs = dict(max_turns=2000)
  with pytest.raises(ValueError, match=r"an episode takes \d+ token slots .* more than the model's max_seq_len"):
    train.build(c)


def test_progress_bar_shows_no_per_token_mean_for_a_step_that_trained_no_token():
  flat = {"episode/return": 0.5, "episode/success": 0.5, "policy/entropy": 0.0, "policy/trained_tokens": 0.0,
          "policy/zero_variance_fraction": 1.0}
  assert train.progress_postfix(flat, filtering=True) == {"return": "0.5", "success": "0.5", "entropy": "—",
                                                          "filtered": "100%"}
  flat.update({"policy/entropy": 1.25, "policy/trained_tokens": 96.0, "policy/zero_variance_fraction": 0.25})
  assert train.progress_postfix(flat, filtering=False) == {"return": "0.5", "success": "0.5", "entropy": "1.25"}


def test_cli_rejects_unknown_config_keys_and_commands():
  run = lambda *args: subprocess.run([sys.executable, "-m", "jarl.cli", *args], capture_output=True, text=True,
                                     cwd=os.path.join(os.path.dirname(__file__), ".."), timeout=120)
  out = run("train", "--config.learner.lr=1e-5")
  assert out.returncode == 2 and out.stderr.startswith("jarl: unknown config key 'learner.lr'") \
      and "Traceback" not in out.stderr
  out = run("trian")
  assert out.returncode == 2 and "unknown command 'trian'" in out.stderr and "train" in out.stderr


def _config_module(name: str):
  """configs/<name>.py, loaded by path (benchmarks/ has modules of the same names)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(f"{name}_config",
                                                os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name, arg", [("quickstart", None), ("critique", None), ("critique", "countdown"),
                                       ("path_star", None)]
                         + [("real_lm", recipe) for recipe in _config_module("real_lm").RECIPES]
                         + [("reference", env) for env in _config_module("reference").ENVS])
def test_train_configs_are_valid(name, arg):
  """Every recipe config in configs/ names valid algorithms, agent fields and env kwargs, and plans."""
  from jarl import envs, plan
  from jarl.agent import AgentConfig, make_layout
  from jarl.tokenizer import load_tokenizer
  module = _config_module(name)
  config = module.get_config() if arg is None else module.get_config(arg)
  train._dataclass(learner.AlgoConfig, config.algo)
  agent = train._dataclass(AgentConfig, config.agent)
  make_layout(agent, envs.make(config.env.name, tokenizer=load_tokenizer(config.tokenizer),
                               guard=config.env.get("guard", False), **dict(config.env.kwargs)))
  assert plan.plan(config, n_devices=1).peak > 0


@pytest.mark.parametrize("env", _config_module("reference").ENVS)
def test_reference_act_budgets_fit_the_experts(env):
  """configs/reference.py: every expert action of 16 episodes fits the ACT budget with its stop token."""
  from jarl import envs
  config = _config_module("reference").get_config(env)
  e = envs.make(env, **dict(config.env.kwargs))
  longest = max(len(e.codec.encode(turn["action_text"])) for i in range(16)
                for turn in e.expert_episode(jax.random.key(i)))
  assert longest + 1 <= config.agent.act_budget, (env, longest)


def test_sampling_never_draws_the_models_rows_beyond_the_tokenizer(tmp_path):
  c = small_config(tmp_path)
  assert train.build(c).sampling.vocab_limit == 0  # tiny: 512 rows, the byte tokenizer's 512 ids
  c.model.overrides = ml_collections.ConfigDict(dict(vocab_size=600))  # padded rows beyond the tokenizer
  assert train.build(c).sampling.vocab_limit == 512


def test_train_on_a_reasoning_gym_host_env_in_the_chat_template(tmp_path):
  """`env.name = "rg:<dataset>"` trains through the host rollout, evaluates on the eval split's problems;
  a critique asked for in user messages, its other branch scored by reasoning-gym, each segment its own credit."""
  c = small_config(tmp_path)
  c.env.name = "rg:chain_sum"
  c.env.kwargs = dict(max_turns=2, obs_len=72, action_len=4,
                      dataset_kwargs=dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1))
  c.agent = ml_collections.ConfigDict(dict(chat=True, system="{instructions}", act_header="", act_budget=4,
                                           critique_budget=2, critique_header="", verdict_header="",
                                           revise_header="", critique_request="Check it.",
                                           verdict_request="Right?", revise_request="Fix it."))
  c.algo.segment_credit = ml_collections.ConfigDict(dict(
      act="first_attempt", verdict=dict(name="counterfactual", calibration=0.5), revise=dict(name="score")))
  with pytest.raises(ValueError, match="sft.steps=2.*host env 'rg:chain_sum'"):
    train.build(c)
  c.sft.steps = 0
  run = train.build(c)
  assert (run.env.split, run.eval_env.split) == ("train", "eval")
  summary = train.train(c)
  assert summary["steps"] == 2 and 0.0 <= summary["final_eval"]["success"] <= 1.0
  samples = (tmp_path / "samples.txt").read_text()
  assert "<|im_start|>user⏎State the final answer to the following arithmetic problem" in samples
  assert "<|im_start|>user⏎Check it.<|im_end|>⏎<|im_start|>assistant⏎" in samples
  assert any("episode/success" in r for r in rl_records(tmp_path))
  assert 0.0 <= summary["final_eval"]["critique_first_success"] <= 1.0  # from both branches of every turn


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A 3-step run that kept its last 3 checkpoints (steps 1, 2, 3)."""
  workdir = tmp_path_factory.mktemp("finished")
  config = small_config(workdir, steps=3)
  config.train.keep_checkpoints = 3
  train.train(config)
  return workdir


def _damage(step_dir, how):
  data_files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  if how == "truncated_data":  # every data file cut in half, as by a write killed midway (cutting only the
    for path in data_files:    # largest one once restored fine, in a full -n 2 run; not reproduced alone)
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  elif how == "bit_flips":  # one bit every 4 kB of every data file (a single flip may land in unused bytes)
    for path in data_files:
      raw = bytearray(path.read_bytes())
      for i in range(len(raw) // 2 % 4096, len(raw), 4096):
        raw[i] ^= 0x40
      path.write_bytes(bytes(raw))
  elif how == "no_metadata":
    (step_dir / "state" / "_METADATA").unlink()
  elif how == "empty_step":
    shutil.rmtree(step_dir)
    step_dir.mkdir()
  elif how == "truncated_meta":
    meta = step_dir / "meta" / "metadata"
    meta.write_text(meta.read_text()[:20])


@pytest.mark.parametrize("how", ["truncated_data", "bit_flips", "no_metadata", "empty_step", "truncated_meta"])
def test_resume_falls_back_from_a_damaged_checkpoint(finished_run, tmp_path, how, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  _damage(workdir / "checkpoints" / "latest" / "3", how)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "episode/ret')  # and the metrics file ends in a line cut mid-write
  config = small_config(workdir, steps=4)
  config.train.keep_checkpoints = 3
  summary = train.train(config, resume=True)
  assert summary["steps"] == 4 and "error" not in summary
  assert "damaged checkpoint(s)" in caplog.text and "step 3:" in caplog.text and "resuming from step 2" in caplog.text
  assert [r["step"] for r in rl_records(workdir)] == [1, 2, 3, 4]
  assert any((workdir / "checkpoints" / "damaged").iterdir())
  assert sorted(int(p.name) for p in (workdir / "checkpoints" / "latest").iterdir() if p.name.isdigit())[-1] == 4


def test_resume_with_every_checkpoint_damaged_says_so(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  for step in (1, 2, 3):
    _damage(workdir / "checkpoints" / "latest" / str(step), "no_metadata")
  with pytest.raises(ValueError, match="could be restored: they are damaged, or were written for a different"):
    train.train(small_config(workdir, steps=4), resume=True)
  saved = json.loads((workdir / "summary.json").read_text())
  assert saved["steps"] == 3 and "CheckpointDamaged" in saved["error"]  # the finished run's summary, and why


def test_sigterm_during_the_warm_start_leaves_a_run_that_resumes(tmp_path, monkeypatch):
  warm_start = train.warm_start

  def preempted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return warm_start(*args, **kwargs)

  monkeypatch.setattr(train, "warm_start", preempted)
  with pytest.raises(SystemExit, match="stopped by signal 15 at step 0"):
    train.train(small_config(tmp_path, steps=2))
  monkeypatch.undo()
  assert "stopped by signal 15" in json.loads((tmp_path / "summary.json").read_text())["error"]
  assert train.train(small_config(tmp_path, steps=2), resume=True)["steps"] == 2


def test_resume_before_the_first_save_starts_over(tmp_path, caplog):
  (tmp_path / "metrics.jsonl").write_text('{"step": -1, "sft/loss": 3.0}\n')  # killed -9 during the warm start
  assert train.train(small_config(tmp_path, steps=1), resume=True)["steps"] == 1
  assert "no checkpoint yet" in caplog.text


def test_diverged_params_stop_the_run_with_a_clear_error(tmp_path):
  config = small_config(tmp_path, steps=4)
  config.optim.lr, config.optim.warmup_steps = 1e38, 0  # finite, but the first update takes params to ~1e38
  config.algo.entropy_coef = 0.1
  with pytest.raises(FloatingPointError, match=r"step \d: the policy's logits are not finite.*Lower optim.lr"):
    train.train(config)
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert "FloatingPointError" in saved["error"] and "eval_before_rl" in saved


def test_packed_rows_that_overflow_stop_the_run_naming_the_knobs(tmp_path):
  config = small_config(tmp_path, steps=2)
  config.algo.pack_len, config.algo.head_len = 1, 1  # no episode fits either
  with pytest.raises(train.ConfigError, match=r"step 1: \d+ episodes did not fit .*raise algo.pack_len \(now 1 "
                                              r"slots, one row per episode; .*set pack_len to 0; or raise "
                                              r"algo.head_len \(now 1 .*--resume"):
    train.train(config)


def test_a_failed_save_is_one_clear_error(tmp_path, monkeypatch):
  save = train.Checkpointer.save

  def disk_full(self, step, *args, **kwargs):
    if step == 2:
      raise OSError(28, "No space left on device")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(train.Checkpointer, "save", disk_full)
  with pytest.raises(RuntimeError, match=r"saving the checkpoint of step 2 in .*checkpoints failed: OSError: .*No "
                                         r"space left on device") as error:
    train.train(small_config(tmp_path, steps=3))
  assert error.value.__cause__ is None and error.value.__suppress_context__
  assert "No space left" in json.loads((tmp_path / "summary.json").read_text())["error"]
  monkeypatch.undo()
  assert train.train(small_config(tmp_path, steps=3), resume=True)["steps"] == 3  # step 1's checkpoint resumes


def test_the_iteration_compiled_from_shapes_alone_runs_on_a_real_state(tmp_path):
  c = small_config(tmp_path)
  compiled = train.compile_iteration(c)  # no params allocated for this
  assert compiled.memory_analysis().temp_size_in_bytes > 0
  run = train.build(c)
  shardings = learner.state_shardings(run.lm, run.optim, run.mesh)
  state = jax.device_put(learner.init_state(run.lm, run.optim, seed=c.seed), shardings)
  state, metrics, _ = compiled(state)  # the same program as training's: same shapes, same layout
  assert int(state.step) == 1 and float(metrics["episode/return"]) >= 0


def test_compile_iteration_refuses_a_host_env(tmp_path):
  c = small_config(tmp_path)
  c.env.name, c.env.kwargs = "rg:chain_sum", dict(max_turns=1)
  c.sft.steps = 0
  with pytest.raises(train.ConfigError, match="steps on the host"):
    train.compile_iteration(c)
