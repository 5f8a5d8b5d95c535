"""Frozen-backbone features, streamed to disk in chunks so that extraction is bounded in
memory at any dataset size and never redone.

A feature set is one named layer of one backbone on one split at one input scale, as
``<root>/<role>/<scale>/<layer>[_avgpool][_l2][_bfloat16]/``: ``chunk_00000.npz`` ... (``features``,
``labels``) and ``manifest.json``. Batches come from ``InputPipeline.eval_batches`` (global
arrays sharded over the mesh's ``data`` axis), the jitted forward pass runs data-parallel
with the variables replicated, and only the unmasked rows are kept.

Crash safety, in write order: a chunk is written to a temp file and renamed, then the
manifest (which lists every complete chunk with its byte size) is rewritten atomically.
The manifest is the truth: on resume, a chunk file it does not list (killed between the
rename and the manifest update), a temp file, or a listed chunk whose size no longer
matches is discarded, and extraction restarts after the last complete chunk's examples
(earlier batches are still decoded by tf.data to keep position, but not run through the
network), whatever the batch size of either run. The split is read once per scale, past the
in-memory cache of preprocessed images (``eval_batches(keep=False)``).
A complete feature set is reused as is. Runs sharing a feature folder (``features_dir``)
take turns: extraction holds an exclusive ``flock`` on ``<folder>/.lock``, so a second run
waits, then finds the set complete and reuses it.

Every manifest records its ``Recipe``: backbone, weights file, layer, preprocessing string
(scale and normalisation), split expression, pooling, L2 and compute dtype. A folder
holding features of a different recipe is never reused or overwritten: extraction stops
with one line naming the difference, so stale features cannot silently feed a new run (use another
``features_dir`` or delete the folder).
"""
import contextlib
import dataclasses
import fcntl
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from medjax import cli, kernels, parallel
from medjax.kernels import precision
from medjax.atomic import save_json, save_npz
from medjax.features.norm import l2_normalize
from medjax.models import backbones

if TYPE_CHECKING:  # Feature functions run without TensorFlow (on an accelerator box, say).
  from medjax.data.pipeline import InputPipeline

MANIFEST = "manifest.json"
LOCK = ".lock"


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Everything that determines a feature set's values; features are reused only for an
  identical recipe."""
  backbone: str
  weights: str
  layer: str
  pp: str
  split: str
  pool: bool
  l2: bool
  compute_dtype: str = "float32"


def input_pp(spec: backbones.BackboneSpec, scale: int) -> str:
  """The preprocessing of every backbone input: RGB, the spec's resize rule to a square
  ``scale`` (``backbones.resize_steps``), the spec's normalisation."""
  resize = "|".join(f"{op}({size})" for op, size in backbones.resize_steps(spec, scale))
  return f"decode(3)|{resize}|normalize('{spec.normalisation}')"


class RecipeError(cli.UserError, ValueError):
  """A feature folder that holds features of another recipe: never reused, never overwritten."""


def feature_dir(root: Path, role: str, scale: int, layer: str, *, pool: bool, l2: bool,
                compute_dtype: str = "float32") -> Path:
  """The folder of one recipe; the dtype is named only when not float32, so bfloat16 and
  float32 runs can share a ``features_dir`` and float32 folders keep their old names."""
  suffix = ("_avgpool" if pool else "") + ("_l2" if l2 else "")
  suffix += "" if compute_dtype == "float32" else f"_{compute_dtype}"
  return Path(root) / role / str(scale) / f"{layer}{suffix}"


def layer_features(module, variables, images, layer: str, *, pool: bool, l2: bool,
                   compute_dtype: str = "float32"):
  """The features of ``layer`` as extraction stores them (pure, so inference reuses it).

  ``pool`` averages a ``(B, H, W, C)`` map over space; ``l2`` normalises along channels,
  i.e. the pooled image vector, or each local descriptor of an unpooled map. The network
  runs in ``compute_dtype`` (:mod:`medjax.kernels.precision`); the features are float32.
  """
  dtype = precision.compute_dtype(compute_dtype)
  _, features = module.apply(precision.cast(variables, dtype), precision.cast(images, dtype))
  features = precision.to_float32(features)
  if layer not in features:
    raise KeyError(f"layer {layer!r} is not a named feature of {type(module).__name__}; "
                   f"known: {sorted(features)}")
  x = features[layer]
  if pool and x.ndim == 4:
    x = jnp.mean(x, axis=(1, 2))
  return l2_normalize(x) if l2 else x


def make_feature_fn(module, layer: str, *, pool: bool, l2: bool,
                    compute_dtype: str = "float32"):
  """``fn(variables, images) -> layer_features(...)``, jit-compiled.

  With the XLA:CPU kernels (``module.kernels``) the batch is split into chunks
  (``medjax.kernels.image_chunk``), dispatched one after the other (asynchronously) and
  concatenated: the same features, sized for the cache.
  """
  def fn(variables, images):
    return layer_features(module, variables, images, layer, pool=pool, l2=l2,
                          compute_dtype=compute_dtype)

  jitted = kernels.jit(fn)
  fast = kernels.fast(getattr(module, "kernels", kernels.REFERENCE))

  def chunked(variables, images):
    chunk = kernels.image_chunk(images.shape, fast)
    if chunk == images.shape[0]:
      return jitted(variables, images)
    return jnp.concatenate([jitted(variables, images[i:i + chunk])
                            for i in range(0, images.shape[0], chunk)])
  return chunked


def _read_manifest(folder: Path) -> dict | None:
  path = folder / MANIFEST
  return json.loads(path.read_text()) if path.exists() else None


def _resume(folder: Path, recipe: Recipe) -> dict:
  """The manifest to continue from, after discarding whatever a killed run left half done."""
  manifest = _read_manifest(folder)
  wanted = dataclasses.asdict(recipe)
  if manifest is None:
    manifest = {"recipe": wanted, "chunks": [], "complete": False}
  elif {"compute_dtype": "float32", **manifest["recipe"]} != wanted:
    # Manifests written before compute_dtype existed hold float32 features.
    manifest["recipe"] = {"compute_dtype": "float32", **manifest["recipe"]}
    diff = sorted(k for k in wanted if manifest["recipe"].get(k) != wanted[k])
    raise RecipeError(
        f"{folder} holds features of another recipe (differs in {diff}: "
        f"{ {k: manifest['recipe'].get(k) for k in diff} } vs { {k: wanted[k] for k in diff} }); "
        f"set another features_dir or delete that folder")
  kept = []
  for chunk in manifest["chunks"]:
    path = folder / chunk["file"]
    if not path.is_file() or path.stat().st_size != chunk["bytes"]:
      logging.warning("Discarding %s and later chunks: missing or not the recorded size.", path)
      manifest["complete"] = False
      break
    kept.append(chunk)
  manifest["chunks"] = kept
  listed = {c["file"] for c in kept} | {MANIFEST, LOCK}
  for path in folder.iterdir() if jax.process_index() == 0 else ():
    if path.name not in listed:
      logging.warning("Discarding %s, left half-written by an interrupted extraction.", path)
      path.unlink()
  return manifest


def _write_chunk(folder: Path, index: int, rows: list[dict]) -> dict:
  name = f"chunk_{index:05d}.npz"
  save_npz(folder / name, features=np.concatenate([r["features"] for r in rows]),
           labels=np.concatenate([r["labels"] for r in rows]))
  return {"file": name, "bytes": (folder / name).stat().st_size,
          "rows": int(sum(len(r["labels"]) for r in rows))}


@contextlib.contextmanager
def _exclusive(folder: Path):
  with (folder / LOCK).open("a") as lock:  # "a": never rewritten, so reuse changes no mtime.
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def extract(data: "InputPipeline", role: str, folder: Path, recipe: Recipe, feature_fn,
            variables, *, batch_size: int, chunk_batches: int) -> dict:
  """Fills ``folder`` with the features of split ``role``; returns the complete manifest.

  ``variables`` must be replicated over ``data.mesh``. A chunk holds ``chunk_batches``
  batches of ``batch_size`` images (the last one fewer), so a killed run loses at most one
  chunk of work. Process 0 alone touches the files (under the folder's lock); every
  process runs the forward pass.
  """
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  if jax.process_index() != 0:
    return _extract(data, role, folder, recipe, feature_fn, variables, batch_size=batch_size,
                    chunk_batches=chunk_batches)
  with _exclusive(folder):
    return _extract(data, role, folder, recipe, feature_fn, variables, batch_size=batch_size,
                    chunk_batches=chunk_batches)


def _extract(data, role, folder, recipe, feature_fn, variables, *, batch_size, chunk_batches):
  manifest = _resume(folder, recipe)
  if manifest["complete"]:
    logging.info("Reusing the %d complete feature chunks in %s.", len(manifest["chunks"]), folder)
    return manifest
  # Resumption counts examples, not batches, so a rerun with another batch size (say,
  # smaller after running out of memory) continues exactly where the chunks end.
  done = sum(c["rows"] for c in manifest["chunks"])
  if done:
    logging.info("Resuming extraction into %s after %d complete chunks (%d examples).", folder,
                 len(manifest["chunks"]), done)
  writer = jax.process_index() == 0
  chunk_rows = batch_size * chunk_batches
  rows, pending = [], 0
  for i, (batch, _) in enumerate(data.eval_batches(role, batch_size, recipe.pp, keep=False)):
    start = i * batch_size
    if start + batch_size <= done:
      continue
    host = parallel.fetch({"features": feature_fn(variables, batch["image"]),
                           "labels": batch["label"], "mask": batch["mask"]})
    keep = host.pop("mask") > 0
    keep[:max(done - start, 0)] = False
    rows.append({k: v[keep] for k, v in host.items()})
    pending += int(keep.sum())
    if pending >= chunk_rows:
      if writer:
        manifest["chunks"].append(_write_chunk(folder, len(manifest["chunks"]), rows))
        save_json(folder / MANIFEST, manifest)
      rows, pending = [], 0
  if pending and writer:
    manifest["chunks"].append(_write_chunk(folder, len(manifest["chunks"]), rows))
  expected = data.info.split_sizes[role]
  total = sum(c["rows"] for c in manifest["chunks"])
  if writer and total != expected:
    raise RuntimeError(f"{folder}: extracted {total} examples of split {role!r}, expected "
                       f"{expected}")
  manifest["complete"] = True
  if writer:
    save_json(folder / MANIFEST, manifest)
  return manifest


def _complete_manifest(folder: Path) -> dict:
  manifest = _read_manifest(Path(folder))
  if manifest is None or not manifest["complete"]:
    raise FileNotFoundError(f"{folder} holds no complete feature set")
  return manifest


def num_examples(folder: Path) -> int:
  """Examples in a complete feature set, from its manifest (no chunk is read)."""
  return sum(c["rows"] for c in _complete_manifest(folder)["chunks"])


def chunks(folder: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields ``(features, labels)`` chunk by chunk from a complete feature set."""
  for chunk in _complete_manifest(folder)["chunks"]:
    with np.load(Path(folder) / chunk["file"]) as z:
      yield z["features"], z["labels"]


def load(folder: Path) -> tuple[np.ndarray, np.ndarray]:
  """All ``(features, labels)`` of a complete feature set, in split order."""
  parts = list(chunks(folder))
  return np.concatenate([f for f, _ in parts]), np.concatenate([y for _, y in parts])
