"""The `jarl` command: `jarl <command> [--config configs/<name>.py] [--config.key=value ...]`.

Tiny on purpose: each command is one library function taking a ConfigDict, so a
notebook can do exactly what the command does. Without `--config`, a command uses
its default config file from the repository's `configs/` folder.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import sys
from typing import Callable

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file defining get_config().")
flags.DEFINE_bool("resume", False, "train: continue the run in workdir from its latest checkpoint.")
flags.DEFINE_bool("overwrite", False, "train: delete an existing workdir and start over.")
flags.DEFINE_string("coordinator", None, "train, multi-host: host:port of process 0 (or $JARL_COORDINATOR; "
                    "TPU pods and SLURM need none).")
flags.DEFINE_integer("num_processes", None, "train, multi-host: number of processes (or $JARL_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "train, multi-host: this process's index (or $JARL_PROCESS_ID).")
flags.DEFINE_string("device", "", "plan: the device kind to plan for (h100, v5e, ...; see jarl.plan).")
flags.DEFINE_float("device_memory_gb", 0.0, "plan: the device memory to plan for, in GiB.")

REPO_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


@dataclasses.dataclass(frozen=True)
class Command:
  help: str
  target: str  # "module:function" taking a ConfigDict; imported only when run
  default_config: str  # file name in configs/
  flags: tuple[str, ...] = ()  # absl flags passed to the target as keyword arguments

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


def _usage() -> str:
  rows = "\n".join(f"  {n:<10} {c.help}" for n, c in sorted(COMMANDS.items()))
  return f"usage: jarl <command> [--config FILE] [--config.key=value ...]\n\ncommands:\n{rows}\n"


def _default_config_path(command: Command) -> str:
  for root in (pathlib.Path.cwd() / "configs", REPO_CONFIGS):
    if (root / command.default_config).exists():
      return str(root / command.default_config)
  raise app.UsageError(f"no --config given and {command.default_config} not found in ./configs "
                       f"or {REPO_CONFIGS}")


def run(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    asked_for_help = len(argv) >= 2 and argv[1] in ("-h", "--help", "help")
    if len(argv) >= 2 and not asked_for_help:
      sys.stderr.write(f"jarl: unknown command {argv[1]!r}\n")
    sys.stderr.write(_usage())
    sys.exit(0 if asked_for_help else 2)
  command = COMMANDS[argv.pop(1)]
  if not any(a == "--config" or a.startswith("--config=") for a in argv):
    argv[1:1] = ["--config", _default_config_path(command)]
  if not any(a.startswith(("--verbosity", "-v=", "--v=")) for a in argv):
    argv[1:1] = ["--verbosity=-1"]  # warnings and up: keeps library INFO logs out of the progress bar
  app.run(lambda _: command.load()(_CONFIG.value, **{f: flags.FLAGS[f].value for f in command.flags}), argv=argv)


if __name__ == "__main__":
  run()
