"""What a run or a benchmark ran on: the machine, its accelerators and the library versions.

    jarl.machine.info()   # cpu, cores, platform, python, devices (backend, kind, count), versions, env, load

`jarl train` records it in summary.json; the benchmarks in their results files (with their
own packages: `info(PACKAGES + ("torch", ...))`).
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
from typing import Sequence

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "jarl")
ENV = ("XLA_FLAGS", "JAX_PLATFORMS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")  # settings that change the speed


def cpu_name() -> str:
  """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def info(packages: Sequence[str] = PACKAGES) -> dict:
  """The machine, jax's devices (all processes'), the installed versions of `packages` and the
  speed-relevant environment variables, with the load average when it is called."""
  devices = jax.devices()
  return {
      "cpu": cpu_name(),
      "cores": os.cpu_count(),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "devices": {"backend": jax.default_backend(), "kind": devices[0].device_kind, "count": len(devices),
                  "processes": jax.process_count()},
      "versions": {p: v for p in packages if (v := version(p))},
      "env": {k: os.environ[k] for k in ENV if k in os.environ},
      "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
  }
