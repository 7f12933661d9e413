"""Config files: a Python file whose `get_config()` returns a ConfigDict; loading one, and its fields.

    config = config_file.load("configs/real_lm.py:frozenlake")     # get_config("frozenlake")
    for key, value, comment in config_file.fields(config, "configs/real_lm.py"):
      print(f"{key} = {value!r}  # {comment}")                    # "train.steps = 30  # ..."

A field's comment is the `# ...` at the end of the source line that sets it: `c.seed = 0  # ...`,
or `c.eval = ConfigDict(dict(every=10, tasks=64))  # ...` (where one line sets several fields, the
comment goes to the first of them). Fields set from variables have none.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import pathlib
import sys
import tokenize
from typing import Any, Iterator

import ml_collections


def load(spec: str) -> ml_collections.ConfigDict:
  """`get_config()` of the file `spec` names ("path.py", or "path.py:arg" for `get_config("arg")`).
  FileNotFoundError when there is no such file; errors of the file itself propagate."""
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"no config file {path}")
  name = f"{pathlib.Path(path).stem}_config"
  module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
  sys.modules[name] = module  # as an import would: dataclasses and pickling look their module up
  module.__spec__.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """("section.field", value) of every field that is not itself a non-empty section, in order."""
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)) and len(value):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def fields(config: ml_collections.ConfigDict, path: str) -> list[tuple[str, Any, str]]:
  """(dotted key, value, comment) of every field of `config` in the order the file at `path` (the
  one `config` came from) sets them, with the comments on their lines ("" where a field has none)."""
  source = pathlib.Path(path).read_text()
  where: dict[str, tuple[int, int]] = {}  # dotted key -> (line, column) of the source that sets it; the last wins
  assigns = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Assign)]
  for node in sorted(assigns, key=lambda n: (n.lineno, n.col_offset)):
    for target in node.targets:
      for element in target.elts if isinstance(target, ast.Tuple) else [target]:
        key = _attribute_path(element)
        if key:
          where[key] = (element.lineno, element.col_offset)
          _keywords(node.value, f"{key}.", where)
  trailing = {tok.start[0]: tok.string.lstrip("#").strip()
              for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT and tok.line[:tok.start[1]].strip()}
  def position(key):  # where the key, or the nearest section above it, is set; in file order
    parts = key.split(".")
    known = next((where[p] for p in (".".join(parts[:n]) for n in range(len(parts), 0, -1)) if p in where),
                 (sys.maxsize, 0))
    return known, key
  found = sorted(leaves(config), key=lambda kv: position(kv[0]))
  first_on_line = {}
  for key in sorted((k for k, _ in found if k in where), key=where.get, reverse=True):
    first_on_line[where[key][0]] = key
  return [(key, value, trailing.get(where[key][0], "") if key in where and first_on_line[where[key][0]] == key
           else "") for key, value in found]


def _attribute_path(node: ast.AST) -> str:
  """"a.b" for the target `c.a.b` (c: the config's name), else ""."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  return ".".join(reversed(parts)) if isinstance(node, ast.Name) and parts else ""


def _keywords(node: ast.AST, prefix: str, where: dict[str, tuple[int, int]]) -> None:
  """Where the fields a value sets are: `ConfigDict(dict(a=1, b=dict(c=2)))`, `{"a": 1}`."""
  if isinstance(node, ast.Call):
    for arg in node.args:
      _keywords(arg, prefix, where)
    for kw in node.keywords:
      if kw.arg:
        where[prefix + kw.arg] = (kw.lineno, kw.col_offset)
        _keywords(kw.value, f"{prefix}{kw.arg}.", where)
  elif isinstance(node, ast.Dict):
    for k, v in zip(node.keys, node.values):
      if isinstance(k, ast.Constant) and isinstance(k.value, str):
        where[prefix + k.value] = (k.lineno, k.col_offset)
        _keywords(v, f"{prefix}{k.value}.", where)
