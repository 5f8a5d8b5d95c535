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
  """A 1-D mesh with each process's devices side by side, in process order.

  So process ``p`` of ``P`` holds rows ``[p * B / P, (p + 1) * B / P)`` of a global batch of
  ``B``, which is what the input pipeline feeds it.
  """
  devices = sorted(devices if devices is not None else jax.devices(),
                   key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(local_batch: dict, sharding: NamedSharding) -> dict:
  """Process-local numpy arrays (leading batch axis) -> global arrays sharded on ``data``."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def replicate(tree, mesh: Mesh):
  """Copies ``tree`` (the same values in every process) to every device of the mesh.

  Leaves go through host numpy: with several processes, ``device_put`` of a jax array
  living on one device onto the global mesh yields an array that Orbax cannot save.
  """
  return jax.device_put(jax.tree.map(np.asarray, tree), replicated(mesh))


def barrier(name: str) -> None:
  """Waits until every process gets here (a no-op for a single process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def fetch(tree):
  """Global arrays -> host numpy (gathered from every process where needed)."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
