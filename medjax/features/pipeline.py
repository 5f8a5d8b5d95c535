"""The frozen-feature pipeline of systems 3 and 5: ``train_and_evaluate(config, workdir)``.

Load the backbone (frozen), extract its features of the train and evaluated splits to
disk (``extract``), fit the aggregation ``config.aggregation`` on train and encode both
splits with it (``medjax.features.aggregations``: avgpool, vlad, cae, sparse_coding, ica,
ssae; its fitted state is saved to the workdir for ``medjax.inference``), classify with a
one-vs-rest quadratic-hinge SVM whose decision values are calibrated on out-of-fold train
values (``classify``), and write exact metrics with intervals, predictions, plots and
``report.html``.

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
import numpy as np

from medjax import cli, parallel
from medjax.data.pipeline import InputPipeline
from medjax.eval import report
from medjax.eval import results as results_lib
from medjax.features import aggregations, classify, extract
from medjax.kernels import precision
from medjax.models import backbones
from medjax.retrieval import runs as retrieval_runs
from medjax.weights import load


@dataclasses.dataclass(frozen=True)
class Backbone:
  """The backbone actually used, after any fallback."""
  module: object
  variables: dict
  spec: backbones.BackboneSpec
  layer: str
  fallback_reason: str


def load_backbone(cfg) -> Backbone:
  """``cfg.name`` with its weights, or ``cfg.fallback`` when none are found where weights
  are looked for; or the network fine-tuned in ``cfg.from_workdir``. A weights file the
  config names is never replaced: a missing one is the user's mistake, not a fallback."""
  if cfg.get("from_workdir"):
    from medjax.features import finetuned
    return Backbone(*finetuned.load(cfg), "")
  try:
    module, variables, spec = load.load_backbone(cfg.name, cfg.weights, include_top=False)
    return Backbone(module, variables, spec, cfg.layer, "")
  except FileNotFoundError as e:
    if cfg.get("weights"):
      raise cli.UserError(f"config.backbone.weights={cfg.weights}: {e}") from None
    if not cfg.fallback:
      raise
    logging.warning("Backbone %s is not available (%s). FALLING BACK to the offline default %s, "
                    "layer %s: results are NOT those of %s.", cfg.name, e, cfg.fallback,
                    cfg.fallback_layer, cfg.name)
    module, variables, spec = load.load_backbone(cfg.fallback, include_top=False)
    return Backbone(module, variables, spec, cfg.fallback_layer, str(e))


def _split_of(config, role: str) -> str:
  """The data a role reads, as recorded with its features: a TFDS split, or a holdout."""
  d = config.data
  if d.val_fraction and role in ("train", "val"):
    return (f"{d.train_split}: {role} side of the stratified {d.val_fraction:g} holdout "
            f"(seed {config.seed})")
  return d.get(f"{role}_split")


def extract_roles(config, data: InputPipeline, backbone: Backbone, roles, workdir: Path, *,
                  pool: bool, l2: bool) -> dict[str, list[Path]]:
  """The feature folder of every role at every ``config.features.scales``, extracted once
  (or reused) under ``config.features_dir``."""
  variables = parallel.replicate(backbone.variables, data.mesh)
  compute_dtype = precision.name_of(config)
  feature_fn = extract.make_feature_fn(backbone.module, backbone.layer, pool=pool, l2=l2,
                                       compute_dtype=compute_dtype)
  root = Path(config.features_dir or workdir / "features")
  folders = {role: [] for role in roles}
  for role in roles:
    for scale in config.features.scales:
      scale = scale or backbone.spec.input_size[0]
      pp = extract.input_pp(backbone.spec, scale)
      folder = extract.feature_dir(root, role, scale, backbone.layer, pool=pool, l2=l2,
                                   compute_dtype=compute_dtype)
      recipe = extract.Recipe(backbone=backbone.spec.name, weights=backbone.spec.weights,
                              layer=backbone.layer, pp=pp, split=_split_of(config, role),
                              pool=pool, l2=l2, compute_dtype=compute_dtype)
      t0 = time.time()
      extract.extract(data, role, folder, recipe, feature_fn, variables,
                      batch_size=config.features.batch_size,
                      chunk_batches=config.features.chunk_batches)
      logging.info("Features of %s at %d px ready in %s (%.0f s).", role, scale, folder,
                   time.time() - t0)
      folders[role].append(folder)
  return folders


def train_and_evaluate(config, workdir) -> dict:
  """Extracts, aggregates, classifies and evaluates; writes metrics.jsonl and results.json."""
  t_start = time.time()
  workdir = Path(workdir)
  resolved, finished = results_lib.open_workdir(workdir, config)
  if finished is not None:
    return finished
  aggregation = aggregations.get(config.aggregation)
  pool, l2 = aggregation.pool, aggregation.l2(config)
  try:
    precision.compute_dtype(precision.name_of(config))
  except ValueError as e:
    raise cli.UserError(str(e)) from None

  mesh = parallel.make_mesh()
  leader = jax.process_index() == 0
  data = InputPipeline(config, workdir, mesh)
  eval_role = "test" if data.has_split("test") else "val"
  backbone = load_backbone(config.backbone)
  folders = extract_roles(config, data, backbone, ("train", eval_role), workdir, pool=pool, l2=l2)
  t_extracted = time.time()

  stage = aggregations.Stage(config=config, workdir=workdir, folders=folders, mesh=mesh)
  state, results = aggregation.fit(stage)
  if leader:
    aggregations.save_state(workdir, state)
  # From here on the evaluation role is "test", whatever split it came from.
  codes = {"train": aggregations.transform(aggregation, config, state, folders["train"]),
           "test": aggregations.transform(aggregation, config, state, folders[eval_role])}
  labels = {"train": stage.labels("train"), "test": stage.labels(eval_role)}
  t_aggregated = time.time()
  ids, id_labels = data.ids_and_labels(eval_role)
  if not np.array_equal(id_labels, labels["test"]):
    raise RuntimeError(f"the {eval_role} split's records and its features disagree on labels")
  results.update(classify.classify(config.svm, codes, labels, data.info.class_names, ids=ids,
                                   workdir=workdir if leader else None, seed=config.seed,
                                   graded=config.data.graded))
  results.update(retrieval_runs.frozen_run(workdir if leader else None, data, codes, labels,
                                           ids))
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
