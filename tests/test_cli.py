"""The `jarl` command in-process: mistakes as one message (exit 2), tracebacks for bugs and with
--debug, per-command --help with the config's fields, and config files' field comments."""

import re

import pytest

from jarl import cli, config_file


def jarl(capsys, *args) -> tuple[int, str, str]:
  """(exit code, stdout, stderr) of `jarl ARGS`."""
  try:
    cli.run(["jarl", *args])
    code = 0
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def test_an_unknown_config_key_names_the_file_and_close_keys(capsys):
  code, _, err = jarl(capsys, "train", "--config.optim.lrr=1")
  assert code == 2 and "Traceback" not in err
  assert re.fullmatch(r"jarl: unknown config key 'optim.lrr': \S*configs/quickstart.py does not set it; "
                      r"did you mean 'optim.lr'.*\?\n", err), err
  code, _, err = jarl(capsys, "train", "--config.learner.lr=1e-5")
  assert code == 2 and "'learner.lr'" in err and "'optim.lr'" in err
  with pytest.raises(cli.UsageError, match="optim.lrr"):  # --debug: the exception itself, with its traceback
    cli.run(["jarl", "train", "--config.optim.lrr=1", "--debug"])


def test_bad_values_flags_and_files_are_one_message(capsys):
  code, _, err = jarl(capsys, "train", "--config.optim.lr=abc")
  assert code == 2 and err.startswith("jarl: --config.optim.lr=abc: could not convert string to float: 'abc'\n")
  assert "jarl train --help" in err and len(err.splitlines()) == 2
  code, _, err = jarl(capsys, "plan", "--resume")  # a flag of another command
  assert code == 2 and "Unknown command line flag 'resume'" in err and "jarl plan --help" in err
  code, _, err = jarl(capsys, "train", "--config", "configs/nope.py")
  assert (code, err) == (2, "jarl: no config file configs/nope.py\n")
  code, _, err = jarl(capsys, "train", f"--config={cli.REPO_CONFIGS / 'real_lm.py'}:nope")
  assert code == 2 and "unknown real-model recipe 'nope'; available" in err
  code, _, err = jarl(capsys, "train", "stray")
  assert code == 2 and "unexpected argument 'stray'" in err


def test_config_problems_and_an_existing_run_dir_are_one_message(capsys, tmp_path):
  code, _, err = jarl(capsys, "train", "--config.train.steps=0")
  assert code == 2 and err == "jarl: the config has 1 problem(s):\n  train.steps=0: must be in [1, inf]\n"
  (tmp_path / "metrics.jsonl").write_text("")
  code, _, err = jarl(capsys, "train", f"--config.workdir={tmp_path}")
  assert code == 2 and err == (f"jarl: run directory {tmp_path} exists: pass --resume to continue it or "
                               "--overwrite to start over\n")


def raise_missing_gguf(config):
  raise ModuleNotFoundError("No module named 'gguf'", name="gguf")


def raise_missing_jarl_module(config):
  raise ModuleNotFoundError("No module named 'jarl.nope'", name="jarl.nope")


def raise_bug(config):
  raise RuntimeError("a bug")


@pytest.mark.parametrize("target, expected", [
    ("raise_missing_gguf", "jarl: No module named 'gguf': pip install 'jarl[real]'\n"),
    ("raise_missing_jarl_module", ModuleNotFoundError),  # jarl's own module: a bug
    ("raise_bug", RuntimeError)])
def test_a_missing_package_is_a_message_and_a_bug_a_traceback(capsys, monkeypatch, target, expected):
  monkeypatch.setitem(cli.COMMANDS, "boom", cli.Command("raises", f"{__name__}:{target}", "quickstart.py"))
  if isinstance(expected, str):
    assert jarl(capsys, "boom") == (2, "", expected)
  else:
    with pytest.raises(expected):
      cli.run(["jarl", "boom"])


def test_overrides_reach_the_config_and_flags_the_command():
  config, values = cli.parse("train", ["--config.optim.lr=0.5", "--resume", "--config.train.wandb_project=proj",
                                       "--config.algo.filter_zero_variance=false"])
  assert (config.optim.lr, config.train.wandb_project, config.algo.filter_zero_variance) == (0.5, "proj", False)
  assert values == dict(resume=True, overwrite=False, coordinator=None, num_processes=None, process_id=None)


def test_help_lists_the_commands_flags_and_the_configs_fields(capsys):
  code, out, _ = jarl(capsys, "train", "--help")
  assert code == 0 and "train an agent" in out
  for flag in ("--resume", "--overwrite", "--debug", "--config.KEY=VALUE"):
    assert f"  {flag}" in out, flag
  assert "--device" not in out  # jarl plan's
  assert re.search(r"\n  train.steps = 60 +# RL iterations\n", out)
  assert re.search(r"\n  optim.lr = 0.0001 +# AdamW learning rate\n", out)
  assert "\n  env.kwargs.max_turns = 6\n" in out  # a field without a comment of its own
  code, out, _ = jarl(capsys, "generate", "-h", "--config.prompt=ignored")
  assert code == 0 and re.search(r"\n  temperature = 0.8 +# 0 = greedy\n", out)
  assert re.search(r"\n  mesh.data = -1 +# -1 = the remaining devices\n  mesh.fsdp = 1\n", out)
  assert "prompt = 'Once upon a time'" in out


def test_config_file_fields_in_file_order_with_their_comments(tmp_path):
  path = tmp_path / "c.py"
  path.write_text(
      "from ml_collections import ConfigDict\n\n"
      "def get_config(name='a'):\n"
      "  c = ConfigDict()\n"
      "  c.workdir = f'runs/{name}'  # where it writes\n"
      "  c.eval = ConfigDict(dict(every=10, tasks=64))  # before RL and at the end\n"
      "  c.model = ConfigDict(dict(preset='tiny',  # a name\n"
      "                            lora=ConfigDict(dict(rank=4))))\n"
      "  c.steps, c.seed = 3, 0\n"
      "  return c\n")
  config = config_file.load(f"{path}:b")
  assert config.workdir == "runs/b"
  assert config_file.fields(config, str(path)) == [
      ("workdir", "runs/b", "where it writes"), ("eval.every", 10, "before RL and at the end"),
      ("eval.tasks", 64, ""), ("model.preset", "tiny", "a name"), ("model.lora.rank", 4, ""),
      ("steps", 3, ""), ("seed", 0, "")]


def test_fields_a_file_leaves_at_their_defaults_can_be_set(capsys):
  """A section's dataclass field (or a model field that is not architecture) that the file never names is
  set from its default's type; a typo is still refused."""
  config, _ = cli.parse("train", ["--config.algo.pack_len=64", "--config.model.scan_layers=True",
                                  "--config.model.attention=chunked", "--config.sampling.top_k=5"])
  assert (config.algo.pack_len, config.model.scan_layers, config.model.attention) == (64, True, "chunked")
  assert config.sampling.top_k == 5
  code, _, err = jarl(capsys, "train", "--config.algo.pack_lenn=64")
  assert code == 2 and "unknown config key 'algo.pack_lenn'" in err and "'algo.pack_len'" not in err
  code, _, err = jarl(capsys, "train", "--config.model.n_layers=3")  # architecture: the preset's, not a flag's
  assert code == 2 and "unknown config key 'model.n_layers'" in err
