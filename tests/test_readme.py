"""The README's Python API example and its own-environment example run as written; its reliability
table cites tests that exist."""

import pathlib
import re
import shlex
import sys

from jarl import cli, train
from jarl.envs import base, user_module

CONFIGS = pathlib.Path(__file__).parent.parent / "configs"


def test_readme_api_example_runs():
  readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
  code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
  tiny = 'models.preset("tiny")'  # one layer: the same program, a quarter of the compile
  assert tiny in code
  code = code.replace(tiny, 'models.preset("tiny", n_layers=1)')
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)
  assert 0.0 <= float(namespace["metrics"]["episode/success"]) <= 1.0
  assert int(namespace["state"].step) == 3


def test_readme_own_environment_example_runs(tmp_path, monkeypatch):
  """The env file is written as guess_number.py, the Python block checks it and runs an iteration (on a
  smaller tiny model), and the command's flags give a config that builds a run (tests/test_envs_user.py
  trains through env.module)."""
  readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
  section = readme.split("## Write your own environment\n")[1].split("\n## ")[0]
  env_file, usage = re.findall(r"```python\n(.*?)```", section, re.S)
  assert env_file.startswith("# guess_number.py")
  (tmp_path / "guess_number.py").write_text(env_file)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # the registration and import end with the test
  monkeypatch.setattr(user_module, "_LOADED", {})
  tiny = 'models.preset("tiny")'
  assert tiny in usage
  usage = usage.replace(tiny, 'models.preset("tiny", d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, mlp_dim=64)')
  try:
    namespace = {}
    exec(compile(usage, "README.md", "exec"), namespace)
  finally:
    sys.modules.pop("guess_number", None)
  assert 0.0 <= float(namespace["metrics"]["episode/success"]) <= 1.0
  assert int(namespace["traj"].tokens.shape[0]) == 16
  command = re.findall(r"```bash\n(.*?)```", section, re.S)[0]
  args = shlex.split(command.replace("\\\n", " "))[2:]  # after `jarl train`, parsed as `jarl train` parses them
  config, _ = cli.parse("train", ["--config", str(CONFIGS / "quickstart.py"), *args])
  assert (config.env.module, config.env.name, dict(config.env.kwargs)) == ("guess_number.py", "guess_number", {})
  try:
    run = train.build(config)
  finally:
    sys.modules.pop("guess_number", None)
  assert type(run.env).__name__ == "GuessNumber"


def test_reliability_table_names_tests_that_exist():
  """Each row of the README's reliability table cites tests; every one must be a test in tests/."""
  readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
  table = readme.split("## Reliability and security")[1].split("\n## ")[0]
  module, cited = None, []
  for cell in re.findall(r"`((?:test_\w+\.py)?::?\w+)`", table):
    path, _, name = cell.rpartition("::") if "::" in cell else ("", "", cell)
    module = path or module
    cited.append((module, name))
  assert len(cited) >= 15, cited
  for module, name in cited:
    source = (pathlib.Path(__file__).parent / module).read_text()
    assert f"def {name}(" in source, (module, name)
