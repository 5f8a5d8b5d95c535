"""Device mesh, shardings and multi-process setup.

One global 1-D mesh with axis ``"data"`` over every device of every process: batches are
split along it, parameters and optimiser state are replicated. ``jax.jit`` then inserts the
gradient all-reduce itself (no pmap).
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(local_batch: dict, sharding: NamedSharding) -> dict:
  """Process-local numpy arrays (leading batch axis) -> global arrays sharded on ``data``."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))


def fetch(tree):
  """Global arrays -> host numpy (gathered from every process where needed)."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
