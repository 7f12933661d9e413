"""Keep host memory that XLA:CPU frees, so that the next call reuses it instead of page-faulting.

XLA:CPU mallocs each execution's temporaries (hundreds of MB for a training step) from its
worker threads and frees them at the end. glibc serves such blocks with a fresh `mmap` and
returns them with `munmap`, so every call page-faults and zeroes all of them again: 1.5M
faults (6 GB of pages) per GRPO iteration of the `small` preset, 10% of its time on a
2-core CPU (benchmarks/grpo_step.py workload: 9.3 -> 8.4 s). With one malloc arena,
no mmap and no trimming, freed blocks stay in the heap for the next call; the cost is that
the process keeps its peak host memory, and more when programs of different shapes alternate
(6 iterations of search-distillation training, benchmarks/distill.py's recipe: 9.0 GB peak RSS
against 5.4 GB without; set JARL_KEEP_HOST_MEMORY=0 for such runs).

`jarl` applies this on import on a CPU-only JAX install (no TPU or GPU plugin: accelerator
hosts keep glibc's defaults, whose per-thread arenas suit their many runtime threads).
Set JARL_KEEP_HOST_MEMORY=1 to force it, =0 to skip it. It must run before JAX starts its
thread pool, i.e. before the first computation: import jarl first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters (malloc.h)
ACCELERATOR_PLUGINS = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")


def cpu_only_install() -> bool:
  return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def keep_host_memory() -> bool:
  """Tune glibc malloc as above; False where it does not apply (not Linux/glibc, or mallopt refused)."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and others have no mallopt
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all(mallopt(param, value) == 1 for param, value in
             ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1)))


def apply_default() -> bool:
  """What `import jarl` does: keep_host_memory() on CPU-only installs, unless JARL_KEEP_HOST_MEMORY says otherwise."""
  setting = os.environ.get("JARL_KEEP_HOST_MEMORY", "")
  if setting == "0" or (setting != "1" and not cpu_only_install()):
    return False
  return keep_host_memory()
