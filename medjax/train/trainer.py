"""The one supervised trainer: ``train_and_evaluate(config, workdir)`` (systems 1, 2, 4).

One jitted step (``medjax.train.step``), ``config.steps_per_call`` of them per call,
data-parallel over a ``Mesh`` (batch sharded on ``data``, state replicated, buffers
donated). The train state holds everything a resumed run needs: step,
parameters, optimiser state (plateau annealing included), the base RNG (dropout keys are
``fold_in(rng, step)``) and early-stopping bookkeeping. Running again on a workdir resumes
from the latest checkpoint; a workdir whose ``results.json`` holds the same config is
returned as is.
"""
import logging
import time
from pathlib import Path

import jax
import numpy as np
from clu import periodic_actions

from medjax import optim, parallel
from medjax.kernels import precision
from medjax.data.pipeline import InputPipeline
from medjax.eval import calibration, evaluation, report
from medjax.eval import metrics as metrics_lib
from medjax.eval import results as results_lib
from medjax.eval import writers
from medjax.retrieval import runs as retrieval_runs
from medjax.runloop import Checkpoints, check_finite
from medjax.train import config_checks, losses, transfer
from medjax.train.step import (TrainState, abstract_state, build_model, init_state, make_predict,
                               make_train_steps)


def evaluate(predict, params, model_state, data: InputPipeline, role: str, loss_name: str,
             with_embeddings: bool = False) -> tuple[dict, dict]:
  """Exact metrics on split ``role``; also returns logits/labels/ids (and embeddings)."""
  logits, labels, ids, embeddings = [], [], [], []
  for batch, batch_ids in data.eval_batches(role):
    out_logits, out_emb = predict(params, model_state, batch["image"])
    host = parallel.fetch({"logits": out_logits, "label": batch["label"], "mask": batch["mask"],
                           **({"emb": out_emb} if with_embeddings else {})})
    keep = host["mask"] > 0
    logits.append(host["logits"][keep])
    labels.append(host["label"][keep])
    if with_embeddings:
      embeddings.append(host["emb"][keep].reshape(keep.sum(), -1))
    ids.extend(batch_ids)
  logits, labels = np.concatenate(logits), np.concatenate(labels)
  names = data.info.class_names
  if loss_name == "sigmoid_xent":
    targets = labels if labels.ndim == 2 else np.eye(len(names))[labels]
    scores = metrics_lib.multi_label(logits, targets, names)
    if labels.ndim == 1:  # One-vs-all heads on single-label data: also score as argmax.
      argmax = metrics_lib.single_label(logits, labels, names)
      scores.update({k: argmax[k] for k in ("accuracy", "balanced_accuracy")})
  else:
    scores = metrics_lib.single_label(logits, labels, names)
  outputs = {"logits": logits, "labels": labels, "ids": ids}
  if with_embeddings:
    outputs["embeddings"] = np.concatenate(embeddings)
  return scores, outputs


def _flat(prefix: str, scores: dict) -> dict:
  return {f"{prefix}/{k}": v for k, v in scores.items()}


def _scalars(flat: dict) -> dict:
  return {k: v for k, v in flat.items() if isinstance(v, (int, float))}


def train_and_evaluate(config, workdir) -> dict:
  """Trains ``config.model`` on ``config.data``, evaluates exactly, writes the workdir."""
  workdir = Path(workdir)
  resolved, finished = results_lib.open_workdir(workdir, config)
  if finished is not None:
    return finished

  config_checks.check(config)
  mesh = parallel.make_mesh()
  data = InputPipeline(config, workdir, mesh)
  info = data.info
  if config.loss == "auto":  # Decided by the data's labels; results.json keeps "auto".
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.loss = losses.resolve("auto", info.multi_label)
  config_checks.check_against_data(config, info)
  steps_per_epoch = data.steps_per_epoch()
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  model = build_model(config, info.num_classes)
  tx = optim.make(config.optimizer, steps_per_epoch)
  first = next(data.eval_batches("train" if not data.has_split("test") else "test", batch_size=mesh.size))
  image_shape = first[0]["image"].shape[1:]
  ckpts = Checkpoints(workdir, keep=config.keep_checkpoints)
  # A resumed run is laid out on the state's shapes; nothing is initialised just to be
  # overwritten (nor, with pretrained weights, the tensors imported).
  if ckpts.latest_step() is not None:
    state = ckpts.restore_latest(abstract_state(model, tx, config, image_shape, mesh))
  elif config.get("init") and config.init.pretrained:
    state = transfer.pretrained_state(model, tx, config, image_shape, mesh)
  else:
    state = init_state(model, tx, config, image_shape, mesh)
  start = int(state.step)
  if start:
    logging.info("Resuming from the checkpoint at step %d of %d.", start, total_steps)
  class_counts, num_train = _train_class_counts(data)
  loss = losses.make(config, class_counts, num_train)
  dead_run = transfer.DeadRunMonitor(loss, class_counts, num_examples=num_train)
  writer = writers.create(workdir, start)
  if start == 0:
    writer.write_hparams({k: v for k, v in _flatten(resolved).items()})
  compute_dtype = precision.name_of(config)
  train_steps = make_train_steps(model, tx, loss, compute_dtype)
  tta = config.get("tta", 1)
  predict = (transfer.make_tta_predict(model, tta, compute_dtype) if tta > 1
             else make_predict(model, compute_dtype))
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=config.log_every)
  use_val = data.has_split("val")
  es = config.early_stopping
  es_metric = es.metric if (es.metric and use_val) else ""
  last_good = start
  window = []
  t0 = time.time()

  train_iter = data.train_iterator(start)
  step = start
  stopped = bool(state.stopped)
  while step < total_steps and not stopped:
    n = min(config.steps_per_call,
            _steps_to_boundary(step, (steps_per_epoch, config.log_every,
                                      config.checkpoint_every_steps), total_steps))
    state, m = train_steps(state, tuple(next(train_iter) for _ in range(n)))
    window.extend(m)
    for _ in range(n):  # clu's progress action wants a call for every step.
      step += 1
      progress(step)
    epoch_end = step % steps_per_epoch == 0
    save_now = step % config.checkpoint_every_steps == 0 or epoch_end or step == total_steps
    if save_now or step % config.log_every == 0:
      # The only host sync in the loop: metrics are fetched when logged or saved.
      host = jax.device_get(window)
      window = []
      mean = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
      if dead_run:
        dead_run.add([h["loss"] for h in host])
      check_finite(f"training diverged by step {step}; stopped without saving. The last good "
                   f"checkpoint (step {last_good}) is kept in {workdir / 'checkpoints'}; lower "
                   f"config.optimizer.learning_rate or check the inputs",
                   loss=mean["loss"], param_norm=host[-1]["param_norm"])
      lr = optim.current_learning_rate(config.optimizer, steps_per_epoch, state.opt_state, step - 1)
      writer.write_scalars(step, {**_flat("train", mean), "train/learning_rate": float(lr),
                                  "train/epoch": step / steps_per_epoch})
    val_predictions = None
    if epoch_end and use_val and (step // steps_per_epoch) % config.eval_every_epochs == 0:
      eval_params = optim.eval_params(config.optimizer, state)
      scores, val_out = evaluate(predict, eval_params, state.model_state, data, "val",
                                 config.loss)
      val_predictions = None if info.multi_label else val_out["logits"].argmax(-1)
      writer.write_scalars(step, _scalars(_flat("val", scores)))
      if es_metric:
        state = _early_stopping(state, eval_params, scores, es, step // steps_per_epoch,
                                ckpts, step)
        stopped = bool(state.stopped)
    if epoch_end and dead_run:
      warning = dead_run.end_epoch(step // steps_per_epoch, val_predictions)
      if warning:
        writer.write_texts(step, {"train/dead_run_warning": warning})
    if save_now or stopped:
      # Metrics first: a run killed between the two then resumes from an older checkpoint
      # and drops the extra lines, rather than from this one with lines missing.
      writer.flush()
      ckpts.save_latest(step, state)
      last_good = step
  ckpts.wait()
  writer.write_scalars(step, {"train/wall_seconds_this_session": time.time() - t0})

  final_params = optim.eval_params(config.optimizer, state)
  params = ckpts.restore_best(final_params) if es_metric else final_params
  if not es_metric and config.optimizer.get("ema_decay", 0.0):
    # The average is what gets evaluated: keep it where predict, explain, export and
    # from_workdir look (Checkpoints.trained_variables), not only inside the optimiser state.
    ckpts.save_best(step, final_params)
    ckpts.wait()
  results = {"train/steps": step, "train/epochs": step / steps_per_epoch, "train/loss_name": config.loss,
             "data/skipped": len(info.skipped), "data/source_key": info.source_key}
  if dead_run and dead_run.warned:
    results["train/dead_run_warning"] = True
  outputs = {}
  leader = jax.process_index() == 0
  temperature = 1.0
  for role in ("val", "test"):  # Val first: anything fitted after training is fitted there.
    if data.has_split(role):
      scores, outputs[role] = evaluate(predict, params, state.model_state, data, role,
                                       config.loss, with_embeddings=config.retrieval)
      if role == "val" and config.get("calibrate") and config.loss == "softmax_xent":
        temperature = calibration.fit_temperature(outputs["val"]["logits"],
                                                  outputs["val"]["labels"])
        results["calibration/temperature"] = temperature
      results.update(_flat(role, scores))
      results.update(_flat(role, final_evaluation(outputs[role], config, info,
                                                  workdir if leader else None, role,
                                                  temperature)))
  if (config.get("val_threshold") and "val" in outputs and info.num_classes == 2
      and config.loss == "softmax_xent"):
    probs = {r: calibration.softmax(o["logits"] / temperature) for r, o in outputs.items()}
    for role in outputs:
      results.update(_flat(f"{role}/val_threshold", transfer.operating_point(
          probs["val"], outputs["val"]["labels"], probs[role], outputs[role]["labels"])))
  if config.retrieval and "test" in outputs:
    results.update(_flat("retrieval", index_and_evaluate_retrieval(
        predict, params, state.model_state, data, config.loss, outputs["test"], workdir)))
  writer.write_scalars(step, _scalars(results))
  writer.close()
  results_lib.finish(workdir, results, resolved,
                     write_report=lambda r: report.write_run_report(workdir, r, data))
  ckpts.close()
  return results


def final_evaluation(outputs: dict, config, info, workdir: Path | None, role: str,
                     temperature: float = 1.0) -> dict:
  """Clinical measures with intervals of the trained model on ``role``; with a
  ``workdir``, also its predictions CSV and plots.

  Softmax heads give probabilities. One-vs-all sigmoid heads give one probability per
  label: multi-label data is scored as such; on single-label data the prediction is the
  argmax, and log loss and ECE are left out since the rows need not sum to one.
  ``temperature`` (fitted on validation when ``config.calibrate``) divides softmax logits.
  """
  logits, labels = outputs["logits"], outputs["labels"]
  sigmoid = config.loss == "sigmoid_xent"
  scores = calibration.sigmoid(logits) if sigmoid else calibration.softmax(logits / temperature)
  return evaluation.final(workdir, role, outputs["ids"], labels, scores, info.class_names,
                          probabilities=not sigmoid, graded=config.data.graded)


def _steps_to_boundary(step: int, periods, total_steps: int) -> int:
  """Steps from ``step`` to the next multiple of any of ``periods`` (or to the end).

  Several steps run in one call (``config.steps_per_call``); a call ends at every step
  where the loop logs, saves, evaluates or stops, so those happen where they would
  with one step per call.
  """
  return min([p - step % p for p in periods] + [total_steps - step])


def index_and_evaluate_retrieval(predict, params, model_state, data: InputPipeline, loss_name,
                                 test_outputs: dict, workdir: Path) -> dict:
  """Indexes the training split's ``pre_logits`` and queries it with every test image.

  The index is saved in ``<workdir>/retrieval/`` for ``python -m medjax.retrieve`` and
  ``medjax.serve`` (:mod:`medjax.retrieval.runs`); the precision-recall curve goes to
  ``<workdir>/plots/pr_curve.png``.
  """
  _, train = evaluate(predict, params, model_state, data, "train", loss_name, with_embeddings=True)
  return retrieval_runs.index_and_score(workdir if jax.process_index() == 0 else None, data,
                                        train, test_outputs)


def _train_class_counts(data: InputPipeline) -> tuple[np.ndarray, int]:
  """Training examples per class (multi-label data: positives per label), and how many
  examples, read from the records."""
  _, labels = data.ids_and_labels("train")
  if data.info.multi_label:
    return labels.sum(0), len(labels)
  return np.bincount(labels.astype(int), minlength=data.info.num_classes), len(labels)


def _early_stopping(state: TrainState, params, scores: dict, es, epoch: int,
                    ckpts: Checkpoints, step: int) -> TrainState:
  """Tracks the best validation value; keeps its parameters (``params``, those evaluated);
  stops after ``patience`` epochs.

  New values are placed like the ones they replace (replicated over the mesh): Orbax
  refuses to checkpoint a single-device array in a run of several processes. They go
  from host numpy, as ``medjax.parallel.replicate`` explains.
  """
  def like(old, value):
    return jax.device_put(np.asarray(value, old.dtype), old.sharding)

  value = float(scores[es.metric]) * (1 if es.mode == "max" else -1)
  if value > float(state.best_metric):
    ckpts.save_best(step, params)
    return state.replace(best_metric=like(state.best_metric, value),
                         best_epoch=like(state.best_epoch, epoch))
  if es.patience_epochs and epoch - int(state.best_epoch) >= es.patience_epochs:
    logging.info("Early stopping at epoch %d: val/%s has not improved since epoch %d.", epoch,
                 es.metric, int(state.best_epoch))
    return state.replace(stopped=like(state.stopped, True))
  return state


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    elif isinstance(v, (int, float, str, bool)) or v is None:
      out[key] = v
    else:
      out[key] = str(v)
  return out
