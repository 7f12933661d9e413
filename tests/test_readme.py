"""The README's Python API example runs as written."""

import pathlib
import re


def test_readme_api_example_runs():
  readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
  code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)
  assert 0.0 <= float(namespace["metrics"]["episode/success"]) <= 1.0
  assert int(namespace["state"].step) == 3
