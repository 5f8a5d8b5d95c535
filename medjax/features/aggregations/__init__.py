"""The image representations of the frozen-feature stage, by name (``config.aggregation``).

Each aggregation is an :class:`Aggregation`: how extraction stores the backbone's map for
it (pooled or not, L2 or not), ``fit`` on the train split's features (returning a fitted
``state``, a nested dict of arrays, and scalars for results.json), and a pure JAX
``encode`` of any batch with that state. The pipeline fits once, saves the state to the
workdir (:func:`save_state`) and encodes every split with it (:func:`transform`);
``medjax.inference`` loads the same state (:func:`load_state`) and runs the same
``encode`` on new images, so a finished run of any aggregation classifies new images
exactly as it classified its test split.

A new aggregation is one module in this package that calls :func:`register` and is
imported at the bottom of this file.
"""
import dataclasses
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from medjax.atomic import save_npz
from medjax.eval import writers
from medjax.features import extract

STATE_FILE = "aggregation.npz"  # The fitted state in the workdir, for tools over the run.


@dataclasses.dataclass
class Stage:
  """What an aggregation reads: feature folders per role (one per scale) and where to write."""
  config: object
  workdir: Path
  folders: dict[str, list[Path]]
  mesh: jax.sharding.Mesh
  writer: object = None

  def open_writer(self, resume_step: int = 0):
    """metrics.jsonl and co., opened once; lines after ``resume_step`` (a resumed
    training's checkpoint) are dropped from an earlier, interrupted run."""
    if self.writer is None:
      self.writer = writers.create(self.workdir, resume_step)
    return self.writer

  def single_scale(self, role: str) -> Path:
    if len(self.folders[role]) != 1:
      raise ValueError(f"aggregation {self.config.aggregation!r} takes one input scale; got "
                       f"features.scales={tuple(self.config.features.scales)}")
    return self.folders[role][0]

  def labels(self, role: str) -> np.ndarray:
    return np.concatenate([y for _, y in extract.chunks(self.folders[role][0])])

  def pooled(self, role: str) -> np.ndarray:
    """The role's pooled features, the scales concatenated and L2-normalised again."""
    return np.asarray(transform(get("avgpool"), self.config, {}, self.folders[role]))


@dataclasses.dataclass(frozen=True)
class Aggregation:
  name: str
  pool: bool  # Extraction averages each map over space (else keeps every position).
  # (stage) -> (state, scalars): fit on the train split, progress kept in the workdir.
  fit: Callable
  # (config, state, [features of each scale]) -> codes (B, dims), L2-normalised; pure JAX.
  encode: Callable
  # (config) -> whether extraction L2-normalises each pooled vector or local descriptor.
  l2: Callable = lambda config: True


_REGISTRY: dict[str, Aggregation] = {}


def register(aggregation: Aggregation) -> Aggregation:
  _REGISTRY[aggregation.name] = aggregation
  return aggregation


def get(name: str) -> Aggregation:
  if name not in _REGISTRY:
    raise ValueError(f"config.aggregation={name!r}; expected one of {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def transform(aggregation: Aggregation, config, state: dict, folders: list[Path]) -> jax.Array:
  """Codes of every example in ``folders`` (one per scale, chunked alike).

  Pooled features (one small vector per image) are encoded in one call, unpooled maps
  chunk by chunk to bound memory. ``encode`` runs op by op here (its pieces are jitted);
  inference runs it under jit.
  """
  if aggregation.pool:
    return aggregation.encode(config, state, [jnp.asarray(extract.load(f)[0]) for f in folders])
  parts = [aggregation.encode(config, state, [jnp.asarray(f) for f, _ in chunks])
           for chunks in zip(*(extract.chunks(folder) for folder in folders))]
  return jnp.concatenate(parts)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = np.asarray(value)
  return flat


def save_state(workdir: Path, state: dict) -> None:
  """The fitted state as one ``.npz`` (nested keys joined by ``/``), written atomically."""
  save_npz(Path(workdir) / STATE_FILE, **_flatten(state))


def load_state(workdir: Path) -> dict:
  """The state :func:`save_state` wrote, as nested dicts of jax arrays."""
  state = {}
  with np.load(Path(workdir) / STATE_FILE) as z:
    for key in z.files:
      *path, leaf = key.split("/")
      node = state
      for part in path:
        node = node.setdefault(part, {})
      node[leaf] = jnp.asarray(z[key])
  return state


# The aggregations register themselves on import.
from medjax.features.aggregations import avgpool, baselines, cae, vlad  # noqa: E402,F401
