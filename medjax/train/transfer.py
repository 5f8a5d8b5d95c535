"""What the one supervised trainer adds for transfer learning (configs/finetune.py):
ImageNet initialisation, test-time augmentation, and the dead-run warning.

Each piece is off unless the config asks for it (``config.init.pretrained``,
``config.tta``), except the dead-run check, which watches every supervised run: a run
whose loss stays at what a constant prediction scores has learnt nothing, and should say so
long before its last epoch.
"""
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from medjax import kernels, parallel
from medjax.kernels import precision
from medjax.train import losses


def pretrained_state(model, tx, config, image_shape, mesh):
  """A fresh state with every imported ImageNet tensor in place of its random initialisation.

  The backbone named by ``config.model.name`` is read from its installed weight file
  (``config.init.weights``, else the backbone's default); parameters and batch-norm
  statistics whose path exists in both trees and has the same shape are taken, so the
  new classifier (another number of classes) keeps its fresh initialisation, the values
  ``step.init_state`` gives it. Only those fresh tensors are drawn; the optimiser state
  (momentum, EMA) is initialised around the imported weights.
  """
  from medjax.train import step as step_lib
  from medjax.weights import load
  _, variables, _ = load.load_backbone(config.model.name, config.init.get("weights") or None)
  imported = traverse_util.flatten_dict(variables)
  abstract = step_lib.abstract_state(model, tx, config, image_shape, mesh)
  # Parameters and the other collections (batch_stats) in one tree, as the weight loaders
  # lay them out, keyed by path.
  wanted = traverse_util.flatten_dict({"params": abstract.params, **abstract.model_state})
  taken = {path: jax.device_put(np.asarray(imported[path], leaf.dtype), leaf.sharding)
           for path, leaf in wanted.items()
           if getattr(imported.get(path), "shape", None) == leaf.shape}
  if not taken:
    raise ValueError(f"config.init.pretrained: no tensor of {config.model.name}'s ImageNet "
                     f"weights matches the model's parameters")
  fresh_paths = [path for path in wanted if path not in taken]
  logging.info("ImageNet initialisation: %d tensors imported; %d newly initialised (%s).",
               len(taken), len(fresh_paths), ", ".join("/".join(p) for p in fresh_paths[:6]))

  def select(state):
    flat = traverse_util.flatten_dict({"params": state.params, **state.model_state})
    return ({path: flat[path] for path in fresh_paths},
            state.replace(params={}, model_state={}, opt_state=()))

  fresh, rest = step_lib.init_state(model, tx, config, image_shape, mesh, select=select)
  merged = traverse_util.unflatten_dict({**taken, **fresh})
  params = merged.pop("params")
  opt_state = kernels.jit(tx.init, once=True, out_shardings=parallel.replicated(mesh))(params)
  return rest.replace(params=params, model_state=merged, opt_state=opt_state)


def tta_views(images: jax.Array, n: int) -> list[jax.Array]:
  """``n`` views of a batch for test-time augmentation: the image itself, then a 10 %
  zoom on the centre and shifts by 4 % of the side, the mild changes of framing the
  training augmentation covers (no flips: laterality matters in radiographs)."""
  h, w = images.shape[1:3]
  moves = [(1.0, 0.0, 0.0), (1.1, 0.0, 0.0), (1.0, 0.04, 0.0), (1.0, -0.04, 0.0),
           (1.0, 0.0, 0.04), (1.0, 0.0, -0.04)]
  views = []
  for zoom, dy, dx in moves[:n]:
    if zoom == 1.0 and dy == dx == 0.0:
      views.append(images)
      continue
    scale = jnp.array([zoom, zoom])
    translation = jnp.array([h * (1 - zoom) / 2 + dy * h, w * (1 - zoom) / 2 + dx * w])
    views.append(jax.vmap(lambda im: jax.image.scale_and_translate(
        im, im.shape, (0, 1), scale, translation, "linear"))(images))
  return views


def make_tta_predict(model, n: int, compute_dtype: str = "float32"):
  """Like ``step.make_predict``, averaging log-probabilities over :func:`tta_views`."""
  dtype = precision.compute_dtype(compute_dtype)

  @kernels.jit
  def predict(params, model_state, images):
    variables = {"params": precision.cast(params, dtype), **model_state}
    logps, first = [], None
    for view in tta_views(precision.cast(images, dtype), n):
      logits, features = precision.to_float32(model.apply(variables, view, train=False))
      logps.append(jax.nn.log_softmax(logits))
      first = features["pre_logits"] if first is None else first
    return jnp.mean(jnp.stack(logps), 0), first
  return predict


class DeadRunMonitor:
  """Warns once when a run is learning nothing: its epoch's mean training loss is at or
  above what a constant prediction of the class prior scores, or every validation image
  gets the same prediction."""

  def __init__(self, loss, class_counts, tolerance: float = 0.03,
               num_examples: int | None = None):
    self.floor = losses.constant_predictor_loss(loss, class_counts, num_examples)
    self.tolerance = tolerance
    self.warned = False
    self.sum, self.count = 0.0, 0

  def add(self, step_losses) -> None:
    self.sum += float(np.sum(step_losses))
    self.count += len(step_losses)

  def end_epoch(self, epoch: int, val_predictions=None) -> str | None:
    """Checks the epoch just ended; returns the warning when it fires (once per run)."""
    mean = self.sum / max(self.count, 1)
    self.sum, self.count = 0.0, 0
    if self.warned:
      return None
    reason = None
    if mean >= self.floor * (1 - self.tolerance):
      reason = (f"its mean training loss in epoch {epoch} is {mean:.4f}, no lower than "
                f"{self.floor:.4f}, the loss of predicting the class prior for every image")
    elif val_predictions is not None and len(val_predictions) > 1 and len(
        np.unique(val_predictions)) == 1:
      reason = (f"after epoch {epoch} it predicts class {int(val_predictions[0])} for every "
                f"validation image")
    if reason is None:
      return None
    self.warned = True
    message = (f"DEAD RUN? The network is not learning from the images: {reason}. It will "
               f"likely end predicting the majority class. Try a lower (or, if the loss is "
               f"flat from the start, higher) config.optimizer.learning_rate, a warmup "
               f"(schedule='warmup_cosine'), class_balance='loss' for imbalanced data, "
               f"or start from ImageNet weights with configs/finetune.py (linear probe first).")
    logging.warning(message)
    return message


def operating_point(val_scores, val_labels, scores, labels) -> dict:
  """Binary tasks: the threshold on the positive (second) class's probability that
  maximises Youden's J (sensitivity + specificity - 1) on validation, and the accuracy,
  sensitivity and specificity it gives on ``scores``, with Wilson 95 % intervals as the
  argmax measures have (a measure the split cannot define, e.g. sensitivity without
  positives, is left out). Chosen on validation only, so the test numbers at it are
  honest; the argmax measures are reported beside them."""
  from medjax.eval import clinical
  val_pos, pos = np.asarray(val_scores)[:, 1], np.asarray(scores)[:, 1]
  val_labels, labels = np.asarray(val_labels), np.asarray(labels)
  best_j, threshold = -np.inf, 0.5
  for t in np.unique(val_pos):
    j = np.mean(val_pos[val_labels == 1] >= t) + np.mean(val_pos[val_labels == 0] < t)
    if j > best_j:
      best_j, threshold = j, float(t)
  pred = (pos >= threshold).astype(int)
  out = {"threshold": threshold}
  for key, hits in (("accuracy", pred == labels), ("sensitivity", pred[labels == 1] == 1),
                    ("specificity", pred[labels == 0] == 0)):
    if len(hits):
      out[key] = float(np.mean(hits))
      out[f"{key}/ci95_low"], out[f"{key}/ci95_high"] = clinical.wilson(int(hits.sum()),
                                                                        len(hits))
  return out
