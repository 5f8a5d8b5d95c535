"""A finished run as a function from image files to class scores, for predict, explain and
export.

Both pipelines come back as one :class:`Run`: the run's own evaluation preprocessing
(``pp``, TensorFlow ops of :mod:`medjax.data.ops`, with the stored training mean image
where used) and ``logits(variables, images) -> (B, K)``, a pure JAX function (so it can be
jitted, differentiated and converted by ``jax2tf``), whose ``scores`` are:

* supervised: the checkpointed model (best checkpoint under early stopping), softmax of
  its logits, or sigmoid for one-vs-all heads;
* frozen features + SVM (every aggregation, one or several scales): the backbone's
  features as extraction stored them, encoded by the run's aggregation with the state it
  fit (``aggregation.npz``: PCA, k-means centres, CAE or baseline weights), the SVM saved
  by the run (``svm.npz``), softmax of its decision values divided by the run's
  calibration temperature (``calibration/temperature`` in results.json; 1 when the run
  has none, so the scores are then uncalibrated), or for multi-label data one sigmoid per
  label, each divided by its own temperature. Several scales travel as one image
  laid out by ``resize_pack``.

Everything comes from the workdir (``results.json``, ``data.json``, checkpoints), so the
raw training images need not be present.
"""
import concurrent.futures
import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from medjax import cli, kernels
from medjax.kernels import precision
from medjax.data import ops
from medjax.data.builders import by_path, dicom_folder
from medjax.data import images, validate


class RunError(cli.UserError):
  """A workdir that holds no finished run this tool can use."""


@dataclasses.dataclass
class Run:
  workdir: Path
  config: ml_collections.ConfigDict
  results: dict
  class_names: tuple[str, ...]
  multi_label: bool           # Scores are independent sigmoids, not a distribution.
  pp: str                     # Evaluation preprocessing of encoded image bytes.
  context: dict
  logits: Callable            # (variables, images (B, H, W, C)) -> (B, K) pre-softmax.
  variables: dict
  embed: Callable | None = None  # (variables, images) -> (B, D): the run's retrieval space.

  @property
  def probabilities(self) -> bool:
    return not self.multi_label

  def scores(self, variables, images):
    """Class scores: softmax of the logits, or per-class sigmoids for multi-label runs."""
    logits = self.logits(variables, images)
    return jax.nn.sigmoid(logits) if self.multi_label else jax.nn.softmax(logits, axis=-1)

  def preprocess_shape(self) -> tuple[int, ...]:
    """The ``(H, W, C)`` every image becomes (the run's pp ends at a fixed size)."""
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("L", (64, 48)).save(buffer, format="PNG")
    return tuple(self.preprocess(buffer.getvalue()).shape)

  def preprocess(self, encoded: bytes) -> np.ndarray:
    fn = ops.compose(self.pp, self.context)
    return fn({"image": tf.constant(encoded)}, tf.zeros([2], tf.int64))["image"].numpy()


def load(workdir) -> Run:
  """The finished run in ``workdir``; :class:`RunError` naming what is missing otherwise."""
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise RunError(f"--workdir={workdir} {'is a file' if workdir.exists() else 'does not exist'}"
                   f"; give the workdir of a finished run")
  path = workdir / "results.json"
  if not path.is_file():
    raise RunError(f"{path} not found: {workdir} holds no finished run; finish it with "
                   f"python -m medjax.main --config=... --workdir={workdir} first")
  results = json.loads(path.read_text())
  if "config" not in results or "seeds" in results:
    raise RunError(f"{path} holds no single run (several seeds: give one seed_<s> workdir)")
  config = ml_collections.ConfigDict(results["config"])
  data = _data_record(workdir, config)
  context = {}
  if (workdir / "mean_image.npy").is_file():
    context["mean_image"] = np.load(workdir / "mean_image.npy", allow_pickle=False)
  kind = {"supervised": _supervised, "frozen_features": _frozen}.get(config.pipeline)
  if kind is None:
    raise RunError(f"{path}: pipeline {config.pipeline!r} is not supported")
  return kind(workdir, config, results, data, context)


def _data_record(workdir: Path, config) -> dict:
  from medjax.data.pipeline import DATA_RECORD
  path = workdir / DATA_RECORD
  if path.is_file():
    return json.loads(path.read_text())
  # Runs made before data.json: ask the prepared dataset (its raw source must exist).
  from medjax.data import builders
  d = config.data
  builder = builders.get_builder(d.name, manual_dir=d.manual_dir, tfds_dir=d.tfds_dir,
                                 split_fractions=d.get("split_fractions", (0.7, 0.1, 0.2)),
                                 split_seed=d.get("split_seed", 0))
  return {"class_names": list(builder.class_names()),
          "multi_label": "labels" in builder.info.features}


def _supervised(workdir, config, results, data, context) -> Run:
  from medjax import runloop
  from medjax.train.step import build_model
  names = tuple(data["class_names"])
  model = build_model(config, len(names))
  variables = runloop.restore_trained(workdir, config)
  sigmoid = config.loss == "sigmoid_xent"

  def logits(variables, images):
    return model.apply(variables, images, train=False)[0]

  def embed(variables, images):
    _, features = model.apply(variables, images, train=False)
    return features["pre_logits"].reshape(images.shape[0], -1)

  return Run(workdir, config, results, names, bool(data["multi_label"]) or sigmoid,
             config.pp_eval, context, logits, variables, embed)


def _frozen(workdir, config, results, data, context) -> Run:
  from medjax.features import aggregations, extract
  from medjax.features.classify import SVM_FILE
  from medjax.weights import load
  for name in (SVM_FILE, aggregations.STATE_FILE):
    if not (workdir / name).is_file():
      raise RunError(f"{workdir / name} not found: the run predates saved aggregations or "
                     f"did not finish; rerun it in a new --workdir")
  aggregation = aggregations.get(config.aggregation)
  pool, l2 = aggregation.pool, aggregation.l2(config)
  module, backbone, spec = load.load_backbone(
      results["backbone/used"], results["backbone/weights"], include_top=False)
  layer = results["backbone/layer"]
  scales = [s or spec.input_size[0] for s in config.features.scales]
  with np.load(workdir / SVM_FILE) as z:
    w, b = jnp.asarray(z["w"]), jnp.asarray(z["b"])
  # One T (softmax), or one per label (multi-label sigmoids).
  temperature = jnp.asarray(results.get("calibration/temperature", 1.0), jnp.float32)
  offsets = np.cumsum([0, *scales])

  def embed(variables, images):
    feats = [extract.layer_features(module, variables["backbone"],
                                    images[:, :s, offsets[i]:offsets[i] + s], layer,
                                    pool=pool, l2=l2,
                                    compute_dtype=precision.name_of(config))
             for i, s in enumerate(scales)]
    return aggregation.encode(config, variables["aggregation"], feats)

  def logits(variables, images):
    return (embed(variables, images) @ variables["w"] + variables["b"]) / temperature

  pp = extract.input_pp(spec, scales[0])
  if len(scales) > 1:
    pp = pp.replace(f"|resize({scales[0]})|", f"|resize_pack({tuple(scales)})|")
  return Run(workdir, config, results, tuple(data["class_names"]), bool(data["multi_label"]),
             pp, context, logits,
             {"backbone": backbone, "aggregation": aggregations.load_state(workdir),
              "w": w, "b": b}, embed)


def read_image(path: Path) -> tuple[bytes | None, str]:
  """``(encoded bytes, "")`` of an image file, converted as a prepared copy stores it
  (DICOM, TIFF, 12-bit greyscale), or ``(None, why not)``, the reason a phrase after the
  path (``"does not exist"``), as every check gives it."""
  if not path.is_file():
    return None, "is a folder; give image files" if path.is_dir() else "does not exist"
  if dicom_folder.is_dicom(path):
    problem, image = dicom_folder.read_dicom(path, 1)  # Converted once, checked and kept.
    return (None, problem.reason) if problem else (images.png(image), "")
  problem, _ = validate.check_image(path, 1)
  if problem:
    return None, problem.reason
  stored = images.encoded(path)  # As the run's prepared copy stores it (TIFF, 12-bit).
  return (stored if isinstance(stored, bytes) else path.read_bytes()), ""


def predict_files(run: Run, paths: list[Path], batch_size: int = 64):
  """``(scores (N, K) with NaN rows for unreadable files, error per file)``.

  Files are checked on a thread pool (PIL's decoder releases the GIL), preprocessed in
  parallel by tf.data and scored in batches by one compiled program (the last batch is
  padded, so nothing recompiles); the forward pass is then what costs.
  """
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    encoded, errors = map(list, zip(*pool.map(read_image, paths))) if paths else ([], [])
  good = [i for i, e in enumerate(errors) if not e]
  out = np.full((len(paths), len(run.class_names)), np.nan, np.float64)
  if not good:
    return out, errors
  fn = ops.compose(run.pp, run.context)
  zero = tf.zeros([2], tf.int64)
  ds = tf.data.Dataset.from_tensor_slices(tf.constant([encoded[i] for i in good]))
  ds = ds.map(ops.traced(lambda x: fn({"image": x}, zero)["image"]),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size).prefetch(2)
  scores = kernels.jit(lambda v, x: run.scores(v, x))
  rows = []
  for batch in ds.as_numpy_iterator():
    n = len(batch)
    if n < batch_size:  # One compiled shape: pad the last batch.
      batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - n, 0)])
    rows.append(np.asarray(scores(run.variables, batch))[:n])
  out[good] = np.concatenate(rows)
  return out, errors


def predicted(run: Run, scores: np.ndarray) -> list[str]:
  """Class name per row (multi-label: the classes scoring at least 0.5, joined by ``|``)."""
  if run.multi_label:
    return ["|".join(c for c, s in zip(run.class_names, row) if s >= 0.5) for row in scores]
  return ["" if np.isnan(row).any() else run.class_names[int(np.argmax(row))] for row in scores]


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
  """``(image paths, labels or '')`` of files, folders (recursively) and CSVs (a ``path``
  column, relative to the CSV, and an optional ``label``), for predict and retrieve."""
  paths, labels = [], []
  for item in inputs:
    path = Path(item).expanduser()
    if by_path.is_csv(path) and path.is_file():
      for row in by_path.read_table(path, required=("path",)):
        paths.append(by_path.listed_path(path.parent, row["path"]))
        labels.append(row.get("label", ""))
    elif path.is_dir():
      found = sorted(p for p in path.rglob("*") if p.is_file() and by_path.is_image(p))
      if not found:
        raise cli.UserError(f"{path} holds no images ({', '.join(by_path.SUFFIXES)})")
      paths += found
      labels += [""] * len(found)
    elif path.exists() or path.suffix.lower() in by_path.SUFFIXES:
      paths.append(path)  # A missing image gets an error row, as an unreadable one.
      labels.append("")
    else:
      raise cli.UserError(f"{path} does not exist; give image files, folders or a CSV")
  return paths, labels
