"""A finished run's evaluation of one split: predictions CSV, clinical measures with 95 %
intervals (their methods named in ``intervals/method``), plots.

Both pipelines call :func:`final` once, after training, with every example's id, label and
scores; periodic evaluations during training keep to :mod:`medjax.eval.metrics`, since the
intervals' resamples and the plots are wasted on a model that is about to change.
"""
from pathlib import Path

import numpy as np

from medjax.eval import bootstrap, clinical, plots
from medjax.eval import predictions as predictions_lib


def final(workdir: Path | None, role: str, ids, labels: np.ndarray, scores: np.ndarray, class_names,
          *, probabilities: bool, graded: bool = False, threshold: float = 0.5) -> dict:
  """Returns the measures; with a ``workdir`` (the writing process), also writes
  ``predictions/<role>.csv`` and ``plots/<role>_*.png`` there.

  ``labels``: ``(n,)`` class indices (prediction = argmax of ``scores``) or ``(n, L)``
  0/1 for multi-label data (prediction: ``scores > threshold``, probabilities assumed).
  ``probabilities``: the rows of ``scores`` are probability distributions.
  """
  labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
  multi_label = labels.ndim == 2
  pred = (scores > threshold).astype(int) if multi_label else scores.argmax(1)
  p = predictions_lib.Predictions(list(ids), labels, pred, scores, tuple(class_names),
                                  multi_label)
  if workdir is not None:
    predictions_lib.write(Path(workdir) / "predictions" / f"{role}.csv", p)
  out = {"bootstrap/resamples": bootstrap.RESAMPLES, "bootstrap/seed": bootstrap.SEED,
         "intervals/method": (bootstrap.MULTI_LABEL_METHOD if multi_label
                              else bootstrap.SINGLE_LABEL_METHOD)}
  if multi_label:
    out.update(clinical.multi_label(labels, scores, class_names, threshold))
    out.update(bootstrap.multi_label(labels, scores, class_names, threshold))
  else:
    out.update(clinical.single_label(labels, scores, class_names, probabilities=probabilities,
                                     graded=graded))
    out.update(bootstrap.single_label(labels, scores, class_names))
  if workdir is not None:
    draw_plots(Path(workdir) / "plots", role, p, probabilities or multi_label)
  return out


def draw_plots(folder: Path, role: str, p: predictions_lib.Predictions,
               probabilities: bool) -> list[Path]:
  names, title = p.class_names, f"{role} split"
  args = (p.labels, p.scores, names)
  drawn = [plots.roc_curves(*args, folder / f"{role}_roc.png", f"ROC, {title}", p.multi_label),
           plots.pr_curves(*args, folder / f"{role}_pr.png", f"Precision-recall, {title}",
                           p.multi_label)]
  if p.multi_label:  # Every label slot is a binary prediction: pool them.
    slot_probs = p.scores.ravel()
    binary = np.stack([1 - slot_probs, slot_probs], 1)
    if probabilities:
      drawn.append(plots.reliability_diagram(binary, p.labels.ravel(),
                                             folder / f"{role}_reliability.png",
                                             f"Reliability (all labels), {title}"))
    return drawn
  drawn.append(plots.confusion_matrix(p.labels, p.predicted, names,
                                      folder / f"{role}_confusion.png", f"{title}"))
  if probabilities:
    drawn.append(plots.reliability_diagram(p.scores, p.labels, folder / f"{role}_reliability.png",
                                           f"Reliability, {title}"))
  return drawn


def confidently_wrong(p: predictions_lib.Predictions, count: int = 8) -> list[dict]:
  """The ``count`` wrong examples the model was surest of: ``id``, truth, prediction, score."""
  names = p.class_names
  if p.multi_label:
    error = np.abs(p.scores - p.labels).max(1)
    wrong = np.flatnonzero((p.predicted != p.labels).any(1))
    order = wrong[np.argsort(-error[wrong], kind="stable")][:count]
    describe = lambda row: ", ".join(n for n, on in zip(names, row) if on) or "none"
    return [{"id": p.ids[i], "label": describe(p.labels[i]), "predicted": describe(p.predicted[i]),
             "score": float(error[i])} for i in order]
  confidence = p.scores[np.arange(len(p.ids)), p.predicted]
  wrong = np.flatnonzero(p.predicted != p.labels)
  order = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
  return [{"id": p.ids[i], "label": names[p.labels[i]], "predicted": names[p.predicted[i]],
           "score": float(confidence[i])} for i in order]
