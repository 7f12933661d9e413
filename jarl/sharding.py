"""Device mesh from config, logical-axis rules, and shard / replicate helpers.

Parameters name their dimensions with logical axes (`embed`, `mlp`, `heads`, …).
`RULES` is the one table that maps a logical axis to mesh axes of the 3-axis mesh
(`data`, `fsdp`, `tensor`):

  batch    -> (data, fsdp)   activations and KV cache rows
  embed    -> fsdp           ZeRO-3 style parameter sharding
  mlp, heads, kv_heads, vocab -> tensor   Megatron-style tensor parallelism
  head_dim, norm, layers, None -> replicated

A dimension that the mesh axes do not divide is an error naming the parameter,
its shape and the mesh, raised before any array is created.

Activations use the same names: `constrain(x, ("batch", None, None))` inside a model lays the
residual stream out rows over (data, fsdp), everything else whole, over the mesh that
`LM.apply` makes current (`activations_on`); without one (one device) it does nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
)


# The rollout's layouts, by `ModelConfig.decode_sharding`. "replicated": nothing split over fsdp (reading the
# training layout, a decode step gathers every layer's weights: several collectives per layer per step); tensor
# parallelism stays. "tensor": for params too big to hold whole, fsdp joins tensor as the rollout's model axis:
# heads, kv heads, MLP and vocabulary split over fsdp x tensor, rows over data only; each device holds
# 1 / (fsdp x tensor) of the params and a decode step all-reduces each block's attention and MLP output.
_MODEL_AXES = ("fsdp", "tensor")
DECODE_RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    "replicated": tuple((name, None if axes == "fsdp" else axes) for name, axes in RULES),
    "tensor": tuple((name, "data" if name == "batch" else None if axes == "fsdp" else
                     _MODEL_AXES if axes == "tensor" else axes) for name, axes in RULES),
}


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one size may be -1 to take the remaining devices.

  The default devices are global: after `jarl.distributed.initialize()` they are every
  process's, in process order, so the innermost axes stay within a host.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into mesh {dict(zip(MESH_AXES, shape))}")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                     f"have {len(devices)}")
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def mesh_from_config(cfg: Mapping | None) -> Mesh:
  """Mesh from a config mapping with optional keys data, fsdp, tensor."""
  cfg = dict(cfg or {})
  unknown = set(cfg) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh config keys {sorted(unknown)}; valid: {list(MESH_AXES)}")
  return make_mesh(**cfg)


def logical_to_spec(axes: Sequence[str | None], rules=RULES) -> P:
  table = dict(rules)
  missing = [a for a in axes if a is not None and a not in table]
  if missing:
    raise ValueError(f"logical axes {missing} have no sharding rule; known: {sorted(table)}")
  return P(*(None if a is None else table[a] for a in axes))


def _mesh_size(mesh: Mesh, entry) -> int:
  if entry is None:
    return 1
  names = entry if isinstance(entry, tuple) else (entry,)
  return math.prod(mesh.shape[n] for n in names)


def batch_shards(mesh: Mesh, rules=RULES) -> int:
  """How many pieces the rules split a batch of rows into on this mesh."""
  return _mesh_size(mesh, logical_to_spec(("batch",), rules)[0])


def check_divisible(name: str, shape: Sequence[int], spec: P, mesh: Mesh) -> None:
  for dim, (size, entry) in enumerate(zip(shape, spec)):
    n = _mesh_size(mesh, entry)
    if size % n:
      raise ValueError(f"{name}: dimension {dim} of shape {tuple(shape)} is {size}, which the mesh "
                       f"axes {entry} (size {n}) of mesh {dict(mesh.shape)} do not divide")


def path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def shardings_for(shapes: Any, specs: Any, mesh: Mesh) -> Any:
  """NamedShardings for a tree of shapes (arrays or ShapeDtypeStructs) and PartitionSpecs."""
  def one(path, x, spec):
    check_divisible(path_name(path), x.shape, spec, mesh)
    return NamedSharding(mesh, spec)
  return jax.tree_util.tree_map_with_path(one, shapes, specs)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Rows over (data, fsdp), everything else replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """Put every array of a batch tree with its leading axis over (data, fsdp).

  Host arrays must hold the same global batch on every process: each process places
  only the rows of its own devices (no cross-process transfer or check).
  """
  def put(x):
    ndim = np.ndim(x)
    target = replicated(mesh) if ndim == 0 else batch_sharding(mesh, ndim)
    if ndim:
      check_divisible("batch", np.shape(x)[:1], P(("data", "fsdp")), mesh)
    if isinstance(x, jax.Array):
      return jax.device_put(x, target)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, target, lambda index: x[index])
  return jax.tree.map(put, tree)


_ACTIVATIONS: contextvars.ContextVar[tuple[Mesh | None, tuple]] = contextvars.ContextVar(
    "activations", default=(None, RULES))


@contextlib.contextmanager
def activations_on(mesh: Mesh | None, rules=RULES) -> Iterator[None]:
  """Within this context (a trace of the model's forward), `constrain` lays activations out over `mesh` by
  `rules` (the training layout's, or a rollout's `DECODE_RULES`)."""
  token = _ACTIVATIONS.set((mesh, rules))
  try:
    yield
  finally:
    _ACTIVATIONS.reset(token)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """x laid out by its logical axes over the current activation mesh (as is without one). A dimension
  its mesh axes do not divide (a micro-batch smaller than the data x fsdp devices) stays whole."""
  mesh, rules = _ACTIVATIONS.get()
  if mesh is None:
    return x
  spec = [entry if size % _mesh_size(mesh, entry) == 0 else None
          for size, entry in zip(x.shape, logical_to_spec(axes, rules))]
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))


def over_rows(fn: Callable, *args: jax.Array) -> jax.Array:
  """fn on each device's rows (a shard_map over the batch axes) when activations are laid out over a mesh,
  for kernels XLA cannot partition (Pallas); fn(*args) without a mesh or when the rows do not divide."""
  mesh, rules = _ACTIVATIONS.get()
  rows = logical_to_spec(("batch",), rules)[0]
  if mesh is None or args[0].shape[0] % _mesh_size(mesh, rows):
    return fn(*args)
  return jax.shard_map(fn, mesh=mesh, in_specs=P(rows), out_specs=P(rows), check_vma=False)(*args)
