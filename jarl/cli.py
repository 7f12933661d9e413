"""The `jarl` command: `jarl <command> [--config FILE[:ARG]] [--config.key=value ...] [flags]`.

Tiny on purpose: each command is one library function taking a ConfigDict, so a
notebook can do exactly what the command does. Without `--config`, a command uses
its default config file from the repository's `configs/` folder. `jarl <command> --help`
lists the command's flags and its config's fields with their defaults and comments.

Mistakes (an unknown config key, a bad value, an existing run directory, a missing optional
package, a config jarl refuses: USER_ERRORS) print one `jarl: ...` message and exit 2;
`--debug` shows their tracebacks. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import pathlib
import re
import sys
from typing import Any, Callable

from absl import flags
from ml_collections import ConfigDict, config_flags

from jarl import config_check, config_file
from jarl.config_check import ConfigError

REPO_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


class UsageError(Exception):
  """A command line jarl cannot run: the message says what is wrong and what to do instead."""


@dataclasses.dataclass(frozen=True)
class Flag:
  define: Callable  # absl's flags.DEFINE_bool, DEFINE_string, ...
  default: Any
  help: str
  metavar: str = ""  # the value in `--name=METAVAR` (none for a bool)


FLAGS = {
    "resume": Flag(flags.DEFINE_bool, False, "continue the run in workdir from its latest checkpoint"),
    "overwrite": Flag(flags.DEFINE_bool, False, "delete an existing workdir and start over"),
    "coordinator": Flag(flags.DEFINE_string, None, "multi-host: host:port of process 0 (or $JARL_COORDINATOR; "
                        "TPU pods and SLURM need none)", "HOST:PORT"),
    "num_processes": Flag(flags.DEFINE_integer, None, "multi-host: number of processes (or $JARL_NUM_PROCESSES)",
                          "N"),
    "process_id": Flag(flags.DEFINE_integer, None, "multi-host: this process's index (or $JARL_PROCESS_ID)", "I"),
    "device": Flag(flags.DEFINE_string, "", "the device kind to plan for (h100, v5e, ...; see jarl.plan)", "KIND"),
    "device_memory_gb": Flag(flags.DEFINE_float, 0.0, "the device memory to plan for, in GiB", "GIB"),
}
DEBUG_HELP = "on an error, show the full traceback"


@dataclasses.dataclass(frozen=True)
class Command:
  help: str
  target: str  # "module:function" taking a ConfigDict; imported only when run
  default_config: str  # file name in configs/
  flags: tuple[str, ...] = ()  # names in FLAGS, passed to the target as keyword arguments

  def load(self) -> Callable:
    module, fn = self.target.split(":")
    return getattr(importlib.import_module(module), fn)


COMMANDS: dict[str, Command] = {}


def register(name: str, help: str, target: str, default_config: str, flags: tuple[str, ...] = ()) -> None:
  COMMANDS[name] = Command(help, target, default_config, flags)


register("train", "train an agent (SFT warm start, then RL)", "jarl.train:main", "quickstart.py",
         flags=("resume", "overwrite", "coordinator", "num_processes", "process_id"))
register("generate", "sample completions for a prompt and print them", "jarl.sampling:main", "generate.py")
register("plan", "print the per-device memory plan of a train config; exit 1 if it will not fit",
         "jarl.plan:main", "plan.py", flags=("device", "device_memory_gb"))


# ---- mistakes: what to tell the user instead of a traceback ------------------------------------

PIP_NAMES = {"gguf": "'jarl[real]'", "reasoning_gym": "'jarl[real]'"}  # module -> what to pip install


def _missing_package(e: ImportError) -> str | None:
  """A package that is not installed: jarl's own message that says what to pip install, or a module
  that is not found (and not one of jarl's own, which would be a bug)."""
  if "pip install" in str(e):
    return str(e)
  top = (e.name or "").split(".")[0]
  if not isinstance(e, ModuleNotFoundError) or not top or top == "jarl":
    return None
  return f"{e}: pip install {PIP_NAMES.get(top, top)}"


USER_ERRORS: dict[type, Callable[[Exception], str | None]] = {  # the first class in an error's MRO decides
    UsageError: str,
    ConfigError: str,  # jarl.config_check and the checks of jarl.train / jarl.plan
    FileExistsError: str,  # a run directory that exists
    FileNotFoundError: str,  # a config file, checkpoint, tokenizer or run directory that does not
    ImportError: _missing_package,
}


def user_error(e: Exception) -> str | None:
  """The message for a mistake of the user's, None for a bug."""
  for cls in type(e).__mro__:
    if cls in USER_ERRORS:
      return USER_ERRORS[cls](e)
  return None


# ---- the command line --------------------------------------------------------------------------

HELP = ("-h", "--help", "--helpshort", "--helpfull")
OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=\[]+)")  # --config.key=value, --config.flag, --noconfig.flag


def _default_config_path(command: Command) -> str:
  for root in (pathlib.Path.cwd() / "configs", REPO_CONFIGS):
    if (root / command.default_config).exists():
      return str(root / command.default_config)
  raise UsageError(f"no --config given and {command.default_config} not found in ./configs or {REPO_CONFIGS}")


def _config_spec(command: Command, args: list[str]) -> tuple[str, list[str]]:
  """(the --config FILE[:ARG] given or the command's default, the other arguments)."""
  spec, rest, args = None, [], list(args)
  while args:
    arg = args.pop(0)
    if arg == "--config":
      if not args:
        raise UsageError("--config needs a file: --config configs/NAME.py")
      spec = args.pop(0)
    elif arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
    else:
      rest.append(arg)
  return spec or _default_config_path(command), rest


def _load(spec: str) -> ConfigDict:
  try:
    return config_file.load(spec)
  except ValueError as e:  # get_config's own check of its argument (e.g. an unknown recipe name)
    raise UsageError(f"--config {spec}: {e}") from e


def _get(config: ConfigDict, key: str, missing: Any = KeyError) -> Any:
  node = config
  for part in key.split("."):
    if not isinstance(node, (ConfigDict, dict)) or part not in node:
      return missing
    node = node[part]
  return node


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (SyntaxError, ValueError):
    return text


def _overrides(args: list[str]) -> list[tuple[str, str]]:
  """(dotted key, argument) of every `--config.key...` argument."""
  return [(match.group(1), arg) for arg in args if (match := OVERRIDE.match(arg))]


def _check_keys(config: ConfigDict, spec: str, args: list[str], command: str) -> None:
  """UsageError for a `--config.key` the config file does not set, naming the keys it may have meant
  (config_flags can set only the fields the file sets). A field the file leaves at its dataclass
  default (`config_check.optional_default`: `--config.algo.pack_len=256` with a file that never names
  it) is added with that default first."""
  for key, _ in _overrides(args):
    default = config_check.optional_default(key)
    section = key.partition(".")[0]
    if _get(config, key) is KeyError and default is not dataclasses.MISSING and _get(config, section) is not KeyError:
      config[section][key.partition(".")[2]] = default  # a field the file leaves at its default: set it
    elif _get(config, key) is KeyError:
      keys = [k for k, _ in config_file.leaves(config)]
      close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6) or [
          k for k in keys if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:3]
      hint = (f"did you mean {' or '.join(map(repr, close))}?" if close else
              f"only fields the file sets can be set here (`jarl {command} --help` lists them)")
      raise UsageError(f"unknown config key {key!r}: {_relative(spec)} does not set it; {hint}")


def _set_none_fields(config: ConfigDict, args: list[str]) -> list[str]:
  """Set the fields the file sets to None (config_flags has no type to parse them by) from their
  `--config.key=value` arguments: the value as a Python literal, else as a string. Returns the
  other arguments."""
  done = set()
  for key, arg in _overrides(args):
    if _get(config, key) is None and "=" in arg:
      *sections, field = key.split(".")
      (_get(config, ".".join(sections)) if sections else config)[field] = _literal(arg.split("=", 1)[1])
      done.add(arg)
  return [arg for arg in args if arg not in done]


def parse(name: str, argv: list[str]) -> tuple[ConfigDict, dict[str, Any]]:
  """(config with the overrides applied, the command's flag values) from the arguments after the
  command's name; UsageError for a bad one."""
  command = COMMANDS[name]
  spec, args = _config_spec(command, argv)
  config = _load(spec)
  _check_keys(config, spec, args, name)
  args = _set_none_fields(config, args)
  values = flags.FlagValues()
  try:
    for flag in command.flags:
      FLAGS[flag].define(flag, FLAGS[flag].default, FLAGS[flag].help, flag_values=values)
    holder = config_flags.DEFINE_config_dict("config", config, flag_values=values, sys_argv=["jarl", *args])
    positional = values(["jarl", *args])[1:]
  except flags.Error as e:
    raise UsageError(f"{str(e).removeprefix('flag ')}\n(`jarl {name} --help` lists the flags and config fields)") \
        from e
  if positional:
    raise UsageError(f"unexpected argument {positional[0]!r} (config fields are set as --config.key=value)")
  return holder.value, {flag: values[flag].value for flag in command.flags}


def _show(value: Any, width: int = 60) -> str:
  text = repr(value.to_dict() if isinstance(value, ConfigDict) else value)
  return text if len(text) <= width else text[:width - 3] + "..."


def _relative(path: str) -> str:
  try:
    return str(pathlib.Path(path).resolve().relative_to(pathlib.Path.cwd()))
  except ValueError:
    return path


def command_help(name: str, spec: str, config: ConfigDict) -> str:
  """`jarl <name> --help`: the command, its flags, and every field of its config with its default
  and the comment on its line in the config file."""
  command = COMMANDS[name]
  rows = [("--config=FILE[:ARG]", "the config file: a Python file with get_config(), given ARG if any"),
          ("--config.KEY=VALUE", "set one of the config's fields (below)")]
  for flag in command.flags:
    rows.append((f"--{flag}" + (f"={FLAGS[flag].metavar}" if FLAGS[flag].metavar else ""), FLAGS[flag].help))
  rows.append(("--debug", DEBUG_HELP))
  width = max(len(r[0]) for r in rows) + 2
  out = [f"usage: jarl {name} [--config FILE[:ARG]] [--config.KEY=VALUE ...] [flags]", "", command.help, "", "flags:"]
  out += [f"  {flag:<{width}}{text}" for flag, text in rows]
  fields = [(f"{key} = {_show(value)}", comment)
            for key, value, comment in config_file.fields(config, spec.partition(":")[0])]
  width = min(max(len(f) for f, _ in fields), 48) + 2
  out += ["", f"config fields of {_relative(spec)} (defaults):"]
  out += [f"  {f:<{width}}# {comment}" if comment else f"  {f}" for f, comment in fields]
  return "\n".join(out) + "\n"


def _usage() -> str:
  rows = "\n".join(f"  {n:<10} {c.help}" for n, c in sorted(COMMANDS.items()))
  return (f"usage: jarl <command> [--config FILE] [--config.key=value ...] [flags]\n\ncommands:\n{rows}\n\n"
          "`jarl <command> --help` lists its flags and its config's fields\n")


def run(argv: list[str] | None = None) -> None:
  """`jarl` with `argv` (sys.argv by default; argv[0] is the program)."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    asked_for_help = len(argv) >= 2 and argv[1] in ("-h", "--help", "help")
    if len(argv) >= 2 and not asked_for_help:
      sys.stderr.write(f"jarl: unknown command {argv[1]!r}\n")
    sys.stderr.write(_usage())
    sys.exit(0 if asked_for_help else 2)
  name, args = argv[1], argv[2:]
  debug = "--debug" in args
  args = [a for a in args if a != "--debug"]
  try:
    if any(a in HELP for a in args):
      spec = _config_spec(COMMANDS[name], args)[0]
      sys.stdout.write(command_help(name, spec, _load(spec)))
      return
    config, values = parse(name, args)
    COMMANDS[name].load()(config, **values)
  except Exception as e:  # noqa: BLE001  (a mistake gets a message, anything else its traceback)
    message = user_error(e)
    if message is None or debug:
      raise
    sys.stderr.write(f"jarl: {message}\n")
    sys.exit(2)


if __name__ == "__main__":
  run()
