"""Multi-controller JAX: one process per host, every process running the same program.

    jarl.distributed.initialize()            # first thing, before any JAX device use
    mesh = jarl.sharding.make_mesh()         # one global mesh over jax.devices() of all processes
    if jarl.distributed.is_main(): ...       # logs, plots, summaries

`initialize` takes each of coordinator, process count and process id from its
argument, else from JARL_COORDINATOR / JARL_NUM_PROCESSES / JARL_PROCESS_ID, and lets
JAX fill in the rest. With none given it joins only a cluster JAX recognises itself
(Cloud TPU pods, SLURM, Open MPI) of more than one process; otherwise (or with
`num_processes=1`) it does nothing and the program stays single-controller.
Cross-process collectives on CPU use gloo, JAX's default `jax_cpu_collectives_implementation`.

Global arrays: every process holds only its devices' shards. Host data enters through
`sharding.shard_batch` (each process places its rows of the same global batch) and
leaves through `to_host` (gathers shards of other processes); both, like every jitted
program, must be called by all processes in the same order.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

# The clusters whose layout jax.distributed.initialize() reads by itself (jax._src.clusters class names).
AUTO_CLUSTERS = ("GceTpuCluster", "GkeTpuCluster", "SlurmCluster", "OmpiCluster")


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value else None


def detected_cluster() -> tuple[str, int] | None:
  """(name, process count) of a cluster environment JAX can initialize from, if any."""
  from jax._src import clusters  # what jax.distributed.initialize() consults; not public API
  for env in clusters.ClusterEnv._cluster_types:
    if env.__name__ in AUTO_CLUSTERS and env.is_env_present():
      return env.__name__, env.get_process_count()
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Join the run's other processes (jax.distributed.initialize); a no-op for a single process."""
  coordinator_address = coordinator_address or os.environ.get("JARL_COORDINATOR") or None
  num_processes = num_processes if num_processes is not None else _env_int("JARL_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("JARL_PROCESS_ID")
  if jax.distributed.is_initialized() or num_processes == 1:
    return
  if coordinator_address is not None or num_processes is not None or process_id is not None:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)  # jax fills in the rest or names it
    return
  cluster = detected_cluster()
  if cluster is not None and cluster[1] > 1:
    jax.distributed.initialize()


def is_main() -> bool:
  """Process 0: the one that writes logs and files."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Wait until every process gets here (no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def process_max(value: int) -> int:
  """The largest of every process's `value` (the value itself for one process)."""
  if jax.process_count() == 1:
    return int(value)
  return int(multihost_utils.process_allgather(np.asarray(value, np.int64)).max())


def to_host(tree: Any) -> Any:
  """numpy copies of a tree of arrays (global ones included), identical on every process."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))
  return jax.tree.map(one, tree)
