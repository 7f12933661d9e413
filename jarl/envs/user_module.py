"""A user's own file (or module) that registers environments, imported by name from a config.

    envs.make("guess_number", module="guess_number.py")     # what `config.env.module` does
    jarl train --config.env.module=guess_number.py --config.env.name=guess_number ...

`import_module(spec)` takes a path to a .py file (relative to the working directory) or a
dotted module name. A file is imported as the module named by its stem ("guess_number"), so a
plain `import guess_number` elsewhere gives the same classes; it runs once per process, and
again when the file has changed since (its `@register` classes then replace the old ones).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
import types

_LOADED: dict[pathlib.Path, tuple[tuple[int, int], types.ModuleType]] = {}  # file -> ((mtime_ns, size), module)


def is_path(spec: str) -> bool:
  return spec.endswith(".py") or "/" in spec or os.sep in spec


def import_module(spec: str) -> types.ModuleType:
  """The module of `spec` (a .py path or a dotted name), imported; errors name the spec."""
  if not is_path(spec):
    try:
      return importlib.import_module(spec)
    except ModuleNotFoundError as e:
      if e.name is None or not (spec == e.name or spec.startswith(e.name + ".")):
        raise  # the module exists; something it imports does not
      raise ModuleNotFoundError(f"env module {spec!r}: no module named {e.name!r} on sys.path (a file path "
                                "must end in .py)", name=e.name) from e
  path = pathlib.Path(spec).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"env module {spec!r}: no such file {path.absolute()} (a relative path is "
                            f"relative to the working directory, {pathlib.Path.cwd()})")
  path = path.resolve()
  stat = path.stat()
  stamp = (stat.st_mtime_ns, stat.st_size)
  if path in _LOADED and _LOADED[path][0] == stamp:
    return _LOADED[path][1]
  name = path.stem
  existing = sys.modules.get(name)
  existing_file = getattr(existing, "__file__", None)
  if existing is not None and path not in _LOADED:
    if existing_file and pathlib.Path(existing_file).resolve() == path:  # the user imported it already
      _LOADED[path] = (stamp, existing)
      return existing
    raise ValueError(f"env module {spec!r}: a module named {name!r} is already imported "
                     f"(from {existing_file or 'a built-in'}); rename {path.name}")
  module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
  sys.modules[name] = module  # as `import` does: dataclasses and pickling look the module up by name
  try:
    module.__spec__.loader.exec_module(module)
  except BaseException:
    if existing is None:
      del sys.modules[name]
    else:
      sys.modules[name] = existing
    raise
  _LOADED[path] = (stamp, module)
  return module
