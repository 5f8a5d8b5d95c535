"""The frozen-feature pipeline of systems 3 and 5: ``train_and_evaluate(config, workdir)``.

pretrained backbone (frozen) -> features streamed to disk (``extract``) -> aggregation ->
L2 -> one-vs-rest quadratic-hinge SVM (``svm``) on train, its decision values calibrated
on out-of-fold train values (``classify``) -> exact metrics with intervals, predictions,
plots and ``report.html`` on test.

``config.aggregation`` chooses the image representation:

* ``avgpool``: the conv map's spatial average, L2-normalised (system 5's baseline, paper 5
  fig. 5; also system 3's "transfer-learned CNN + SVM" row). Several ``features.scales``
  are concatenated (each L2-normalised, then the whole).
* ``vlad``: every spatial position of the conv map is a local descriptor (optionally
  L2-normalised per descriptor, ``vlad.descriptor_l2``, and PCA-reduced to
  ``vlad.descriptor_dims`` when wider than ``vlad.descriptor_pca_above``, both fit on
  train only); k-means (k-means++ then Lloyd) on at
  most ``vlad.max_descriptors`` train descriptors sampled with the seed; VLAD (power /
  intra options) -> L2 -> PCA to ``vlad.pca_dims`` fit on train -> L2 (paper 5 fig. 6).
  k-means progress (centres, iteration) is saved after every iteration and resumed.
* ``cae``: system 3's zero-bias convolutional auto-encoder trained on the train split's
  conv maps (SGD, anneal /10 on plateau, Orbax checkpoints every epoch, resumed), then its
  zero-bias pooled codes, flattened -> L2.
* ``sparse_coding`` / ``ica`` / ``ssae``: system 3's unsupervised baselines (scikit-learn's
  ``MiniBatchDictionaryLearning`` / ``FastICA``, and the 2-layer stacked sparse
  auto-encoder of ``sparse_autoencoder``) fit on the train split's pooled features.

The SVM input is always L2-normalised. The paper's "LBFGS, learning rate 0.1, C = 1" is
``svm.C = 1`` with ``svm.learning_rate = 0.1`` (PyTorch's fixed-step L-BFGS convention);
the default ``None`` lets the zoom line search pick each step, which reaches the same unique
optimum of this strictly convex objective with a descent guarantee (see ``medjax.features.svm``).

The backbone is ``config.backbone.name``; when its weights are not available (VGG19 and
AlexNet files are not shipped) the run falls back to ``backbone.fallback`` and its
``fallback_layer``, says so in the log and records ``backbone/used`` in results.json.
Evaluation uses the test split, or, for a dataset configured without one, the stratified
``data.val_fraction`` holdout of train that ``InputPipeline`` carves (reported as ``test/``).
"""
import dataclasses
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from medjax import parallel
from medjax.atomic import save_npz
from medjax.data.pipeline import InputPipeline
from medjax.eval import report
from medjax.eval import results as results_lib
from medjax.eval import writers
from medjax.features import cae, classify, extract, kmeans, pca, sparse_autoencoder, svm, vlad
from medjax.models import backbones
from medjax.train import optim
from medjax.train.checkpoint import Checkpoints


@dataclasses.dataclass(frozen=True)
class Backbone:
  """The backbone actually used, after any fallback."""
  module: object
  variables: dict
  spec: backbones.BackboneSpec
  layer: str
  fallback_reason: str


def load_backbone(cfg) -> Backbone:
  """``cfg.name`` with its weights, or ``cfg.fallback`` when they cannot be found; or the
  network fine-tuned in ``cfg.from_workdir``."""
  if cfg.get("from_workdir"):
    from medjax.features import finetuned
    return Backbone(*finetuned.load(cfg), "")
  try:
    module, variables, spec = backbones.load_backbone(cfg.name, cfg.weights, include_top=False)
    return Backbone(module, variables, spec, cfg.layer, "")
  except FileNotFoundError as e:
    if not cfg.fallback:
      raise
    logging.warning("Backbone %s is not available (%s). FALLING BACK to the offline default %s, "
                    "layer %s: results are NOT those of %s.", cfg.name, e, cfg.fallback,
                    cfg.fallback_layer, cfg.name)
    module, variables, spec = backbones.load_backbone(cfg.fallback, include_top=False)
    return Backbone(module, variables, spec, cfg.fallback_layer, str(e))


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


def _l2(x) -> np.ndarray:
  return np.asarray(extract.l2_normalize(jnp.asarray(x)))


# -- aggregations: Stage -> ({role: representation}, scalars) ---------------------------------
def _pooled(stage: Stage) -> dict[str, np.ndarray]:
  return {role: _l2(np.concatenate([extract.load(f)[0] for f in folders], axis=1))
          for role, folders in stage.folders.items()}


def aggregate_avgpool(stage: Stage):
  return _pooled(stage), {}


def _descriptors(maps: np.ndarray) -> np.ndarray:
  return maps.reshape(maps.shape[0], -1, maps.shape[-1])


def _descriptor_sample(folder: Path, cap: int, seed: int) -> np.ndarray:
  """At most ``cap`` local descriptors of the split, drawn without replacement from ``seed``."""
  first, _ = next(extract.chunks(folder))
  total = extract.num_examples(folder) * _descriptors(first).shape[1]
  chosen = np.sort(np.random.default_rng(seed).choice(total, min(cap, total), replace=False))
  sample, offset = [], 0
  for maps, _ in extract.chunks(folder):
    flat = _descriptors(maps).reshape(-1, maps.shape[-1])
    inside = chosen[(chosen >= offset) & (chosen < offset + len(flat))]
    sample.append(flat[inside - offset])
    offset += len(flat)
  return np.concatenate(sample).astype(np.float32)


def fit_kmeans(sample: np.ndarray, k: int, *, seed: int, max_iter: int, tol: float,
               path: Path) -> tuple[np.ndarray, dict]:
  """k-means++ then Lloyd iterations on ``sample``, resumable from ``path``.

  The sample is centred first (as sklearn does) for float32 precision. After the seeding
  and after every iteration, ``path`` holds the centres, the iteration count and whether
  the shift test passed; a rerun continues from there. Stops as ``kmeans.fit`` does.
  """
  if len(sample) < k:
    raise ValueError(f"k-means with k={k} needs at least {k} descriptors; the sample has "
                     f"{len(sample)} (raise vlad.max_descriptors or use more images)")
  mean = sample.mean(0)
  x = jnp.asarray(sample - mean)
  tol_abs = tol * float(np.mean(np.var(sample, axis=0)))
  if path.exists():
    with np.load(path) as z:
      centers, iteration, converged = z["centers"], int(z["iteration"]), bool(z["converged"])
    if centers.shape != (k, x.shape[1]):
      raise ValueError(f"{path} holds k-means centres of shape {centers.shape}, not "
                       f"{(k, x.shape[1])}; delete it or use a new workdir")
    logging.info("Resuming k-means (k=%d) at iteration %d.", k, iteration)
    centers = jnp.asarray(centers)
  else:
    path.parent.mkdir(parents=True, exist_ok=True)
    centers = kmeans.init(x, k, key=jax.random.PRNGKey(seed))
    iteration, converged = 0, False
    save_npz(path, centers=np.asarray(centers), iteration=0, converged=False)
  while not converged and iteration < max_iter:
    centers, shift = kmeans.lloyd_iteration(centers, x)
    iteration += 1
    converged = float(shift) <= tol_abs
    save_npz(path, centers=np.asarray(centers), iteration=iteration, converged=converged)
  scalars = {"kmeans/iterations": iteration, "kmeans/converged": float(converged),
             "kmeans/inertia": float(kmeans.inertia(centers, x)),
             "kmeans/descriptors": len(sample)}
  return np.asarray(centers) + mean, scalars


def aggregate_vlad(stage: Stage):
  cfg, seed = stage.config.vlad, stage.config.seed
  sample = _descriptor_sample(stage.single_scale("train"), cfg.max_descriptors, seed)
  reducer = None
  if cfg.descriptor_dims and sample.shape[1] > cfg.descriptor_pca_above:
    reducer = pca.fit(jnp.asarray(sample), min(cfg.descriptor_dims, *sample.shape))
    sample = np.asarray(pca.transform(reducer, jnp.asarray(sample)))
  centers, scalars = fit_kmeans(sample, cfg.k, seed=seed, max_iter=cfg.kmeans_max_iter,
                                tol=cfg.kmeans_tol, path=stage.workdir / "kmeans" / f"k{cfg.k}.npz")
  centers = jnp.asarray(centers)

  def encode(folder):
    # Filled in place: VLAD vectors are large (k * D floats per image), so no second copy.
    out = np.empty((extract.num_examples(folder), cfg.k * centers.shape[1]), np.float32)
    row = 0
    for maps, _ in extract.chunks(folder):
      desc = jnp.asarray(_descriptors(maps))
      if reducer is not None:
        desc = pca.transform(reducer, desc.reshape(-1, desc.shape[-1])).reshape(
            *desc.shape[:2], -1)
      out[row:row + len(maps)] = vlad.vlad(desc, centers, power_alpha=cfg.power_alpha or None,
                                           intra_norm=cfg.intra_norm)
      row += len(maps)
    return jnp.asarray(out)

  codes = {role: encode(stage.single_scale(role)) for role in stage.folders}
  scalars["vlad/dims"] = codes["train"].shape[1]
  if cfg.pca_dims:
    params = pca.fit(codes["train"], min(cfg.pca_dims, *codes["train"].shape))
    codes = {role: _l2(pca.transform(params, codes.pop(role))) for role in list(codes)}
  return codes, scalars


def _rows_on_mesh(maps: np.ndarray, rows: np.ndarray, sharding) -> jax.Array:
  """``maps[rows]`` as a global batch. Every process holds all maps, so each fills its own
  devices' rows."""
  batch = maps[rows]
  return jax.make_array_from_callback(batch.shape, sharding, lambda index: batch[index])


def train_cae(cfg, maps: np.ndarray, *, seed: int, stage: Stage) -> tuple[dict, int]:
  """Trains the zero-bias CAE on ``maps`` ``(N, H, W, C)``; returns ``(parameters, steps)``.

  Epochs visit the maps in a permutation drawn from ``(seed, epoch)`` in batches of
  ``cfg.batch_size`` (the remainder of an epoch is dropped so every step has one shape),
  ``cfg.steps_per_call`` steps per compiled call (fewer at an epoch's end),
  and the state (step, parameters, optimiser with its plateau scale) is checkpointed with
  Orbax at every epoch end, so a killed run resumes at its last epoch with the same order.
  Training stops early once the epoch loss has converged (``cae.loss_converged`` with
  ``cfg.converge_rtol`` and ``cfg.converge_patience``; a resumed run counts anew).
  """
  if cfg.steps_per_call < 1:
    raise ValueError(f"config.cae.steps_per_call={cfg.steps_per_call} must be at least 1")
  n = len(maps)
  batch_size = min(cfg.batch_size, n)
  steps_per_epoch = n // batch_size
  tx = optim.make(cfg.optimizer, steps_per_epoch)
  params = cae.init(jax.random.PRNGKey(seed), maps.shape[-1], cfg.filters)
  state = parallel.replicate({"step": jnp.zeros((), jnp.int32), "params": params,
                              "opt_state": tx.init(params)}, stage.mesh)
  ckpts = Checkpoints(stage.workdir / "cae", keep=2)
  state = ckpts.restore_latest(state)
  step = int(state["step"])
  if step:
    logging.info("Resuming CAE training from the checkpoint at step %d.", step)
  writer = stage.open_writer(step)
  params, opt_state = state["params"], state["opt_state"]
  sharding = parallel.batch_sharding(stage.mesh)
  history = []
  for epoch in range(step // steps_per_epoch, cfg.num_epochs):
    order = np.random.default_rng([seed, epoch]).permutation(n)
    losses = []
    for first in range(0, steps_per_epoch, cfg.steps_per_call):
      batches = tuple(_rows_on_mesh(maps, order[s * batch_size:(s + 1) * batch_size], sharding)
                      for s in range(first, min(first + cfg.steps_per_call, steps_per_epoch)))
      params, opt_state, values = cae.train_steps(params, opt_state, batches, tx,
                                                  reduction=cfg.loss_reduction)
      losses.extend(values)
    step = (epoch + 1) * steps_per_epoch
    mean_loss = float(np.mean(jax.device_get(losses)))
    if not np.isfinite(mean_loss):
      raise FloatingPointError(f"CAE training diverged in epoch {epoch + 1} (loss {mean_loss}); "
                               f"lower cae.optimizer.learning_rate")
    ckpts.save_latest(step, {"step": jnp.asarray(step, jnp.int32), "params": params,
                             "opt_state": opt_state})
    lr = optim.current_learning_rate(cfg.optimizer, steps_per_epoch, opt_state, step - 1)
    writer.write_scalars(step, {"cae/loss": mean_loss, "cae/epoch": epoch + 1,
                                "cae/learning_rate": float(lr)})
    writer.flush()
    history.append(mean_loss)
    if cae.loss_converged(history, cfg.converge_rtol, cfg.converge_patience):
      logging.info("CAE loss converged at epoch %d (%.6g).", epoch + 1, mean_loss)
      break
  ckpts.wait()
  ckpts.close()
  return params, step


def aggregate_cae(stage: Stage):
  cfg = stage.config.cae
  maps, _ = extract.load(stage.single_scale("train"))
  params, steps = train_cae(cfg, maps, seed=stage.config.seed, stage=stage)
  del maps
  codes = {role: _l2(np.concatenate([np.asarray(cae.features(params, jnp.asarray(m)))
                                     for m, _ in extract.chunks(stage.single_scale(role))]))
           for role in stage.folders}
  return codes, {"cae/dims": codes["train"].shape[1], "cae/steps": steps}


def _sklearn_baseline(make_model):
  """An aggregation fitting ``make_model(config)`` on the train split's pooled features."""
  def aggregate(stage: Stage):
    pooled = _pooled(stage)
    model = make_model(stage.config).fit(pooled["train"])
    return {role: _l2(model.transform(x).astype(np.float32)) for role, x in pooled.items()}, {}
  return aggregate


def _sparse_coding(config):
  from sklearn.decomposition import MiniBatchDictionaryLearning
  cfg = config.baseline
  return MiniBatchDictionaryLearning(n_components=cfg.components, alpha=cfg.alpha,
                                     batch_size=256, max_iter=cfg.max_iter,
                                     transform_algorithm="lasso_cd", transform_alpha=cfg.alpha,
                                     random_state=config.seed)


def _ica(config):
  from sklearn.decomposition import FastICA
  cfg = config.baseline
  return FastICA(n_components=cfg.components, whiten="unit-variance", max_iter=cfg.max_iter,
                 random_state=config.seed)


# name -> (extraction pools the map?, extraction L2-normalises?, aggregation)
AGGREGATIONS = {
    "avgpool": (True, True, aggregate_avgpool),
    "vlad": (False, None, aggregate_vlad),  # None: vlad.descriptor_l2 decides.
    "cae": (False, False, aggregate_cae),
    "sparse_coding": (True, True, _sklearn_baseline(_sparse_coding)),
    "ica": (True, True, _sklearn_baseline(_ica)),
    "ssae": (True, True, _sklearn_baseline(
        lambda config: sparse_autoencoder.from_config(config.ssae, config.seed))),
}


def _split_of(config, role: str) -> str:
  """The data a role reads, as recorded with its features: a TFDS split, or a holdout."""
  d = config.data
  if d.val_fraction and role in ("train", "val"):
    return (f"{d.train_split}: {role} side of the stratified {d.val_fraction:g} holdout "
            f"(seed {config.seed})")
  return d.get(f"{role}_split")


def train_and_evaluate(config, workdir) -> dict:
  """Extracts, aggregates, classifies and evaluates; writes metrics.jsonl and results.json."""
  t_start = time.time()
  workdir = Path(workdir)
  resolved, finished = results_lib.open_workdir(workdir, config)
  if finished is not None:
    return finished
  if config.aggregation not in AGGREGATIONS:
    raise ValueError(f"config.aggregation={config.aggregation!r}; expected one of "
                     f"{sorted(AGGREGATIONS)}")
  pool, l2, aggregate = AGGREGATIONS[config.aggregation]
  l2 = config.vlad.descriptor_l2 if l2 is None else l2

  mesh = parallel.make_mesh()
  leader = jax.process_index() == 0
  data = InputPipeline(config, workdir, mesh)
  if data.info.multi_label:
    raise ValueError(f"{data.info.name} is multi-label; the frozen-feature SVM is single-label")
  eval_role = "test" if data.has_split("test") else "val"
  backbone = load_backbone(config.backbone)
  variables = parallel.replicate(backbone.variables, mesh)
  feature_fn = extract.make_feature_fn(backbone.module, backbone.layer, pool=pool, l2=l2)
  root = Path(config.features_dir or workdir / "features")
  folders = {"train": [], eval_role: []}
  for role in folders:
    for scale in config.features.scales:
      scale = scale or backbone.spec.input_size[0]
      pp = extract.input_pp(backbone.spec.normalisation, scale)
      folder = extract.feature_dir(root, role, scale, backbone.layer, pool=pool, l2=l2)
      recipe = extract.Recipe(backbone=backbone.spec.name, weights=backbone.spec.weights,
                              layer=backbone.layer, pp=pp, split=_split_of(config, role),
                              pool=pool, l2=l2)
      t0 = time.time()
      extract.extract(data, role, folder, recipe, feature_fn, variables,
                      batch_size=config.features.batch_size,
                      chunk_batches=config.features.chunk_batches)
      logging.info("Features of %s at %d px ready in %s (%.0f s).", role, scale, folder,
                   time.time() - t0)
      folders[role].append(folder)
  t_extracted = time.time()

  stage = Stage(config=config, workdir=workdir, folders=folders, mesh=mesh)
  codes, results = aggregate(stage)
  # From here on the evaluation role is "test", whatever split it came from.
  codes = {"train": codes["train"], "test": codes[eval_role]}
  labels = {"train": stage.labels("train"), "test": stage.labels(eval_role)}
  t_aggregated = time.time()
  ids, id_labels = data.ids_and_labels(eval_role)
  if not np.array_equal(id_labels, labels["test"]):
    raise RuntimeError(f"the {eval_role} split's records and its features disagree on labels")
  results.update(classify.classify(config.svm, codes, labels, data.info.class_names, ids=ids,
                                   workdir=workdir if leader else None, seed=config.seed,
                                   graded=config.data.graded))
  results.update({
      "backbone/requested": config.backbone.name,
      "backbone/used": backbone.spec.name,
      "backbone/fallback_reason": backbone.fallback_reason,
      "backbone/layer": backbone.layer,
      "backbone/weights": backbone.spec.weights,
      "features/dims": int(codes["train"].shape[1]),
      "test/split": _split_of(config, eval_role),
      "data/skipped": len(data.info.skipped), "data/source_key": data.info.source_key,
      "time/extract_seconds": t_extracted - t_start,
      "time/aggregate_seconds": t_aggregated - t_extracted,
      "time/svm_seconds": time.time() - t_aggregated,
  })
  results["time/total_seconds"] = time.time() - t_start
  writer = stage.open_writer()
  writer.write_scalars(results.get("cae/steps", 0), {k: v for k, v in results.items()
                                                     if isinstance(v, (int, float))})
  writer.close()
  results_lib.finish(workdir, results, resolved, write_report=lambda r: report.write_run_report(
      workdir, r, data, data_role=eval_role))
  return results
