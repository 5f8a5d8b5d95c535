"""The frozen-feature classifier: the SVM fit on the train codes, its decision values made
probabilities, and every role's metrics (the evaluated one with intervals, CSV and plots).

An SVM's decision values are margins, not probabilities, so they are temperature-scaled
(``medjax.eval.calibration``: one ``T``, every prediction unchanged) with ``T`` fit on
held-out decision values, never on test. Validation data cannot supply them: Kermany's
val split has 16 images and the papers train on train+val, so nothing labelled is left
apart from test. The held-out values are therefore out-of-fold, as scikit-learn's
``CalibratedClassifierCV(ensemble=False)`` does it: the train codes are cut into
``CALIBRATION_FOLDS`` stratified folds, an SVM with the same settings is fit on all but one
and scores that one; the classifier evaluated is still the SVM fit on all of train.
"""
import logging
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from medjax.atomic import save_npz
from medjax.eval import calibration, evaluation
from medjax.eval import metrics as metrics_lib
from medjax.features import svm

CALIBRATION_FOLDS = 5
SVM_FILE = "svm.npz"  # The SVM fit on all of train (w, b), for tools over the finished run.


def fit(cfg, x: np.ndarray, y: np.ndarray, num_classes: int):
  """``(SVMParams, state, SVMConfig)`` of the SVM of ``cfg`` (``config.svm``) on ``(x, y)``."""
  svm_cfg = svm.SVMConfig(C=float(cfg.C), learning_rate=cfg.learning_rate, tol=float(cfg.tol))
  x, y = jnp.asarray(x), jnp.asarray(y)
  state = svm.run(svm.init(x, y, num_classes, svm_cfg), x, y, cfg.max_iter, svm_cfg)
  return svm.params_from_state(state, svm_cfg), state, svm_cfg


def out_of_fold_decisions(cfg, x: np.ndarray, y: np.ndarray, num_classes: int, folds: int,
                          seed: int) -> np.ndarray:
  """Every train example's decision values from an SVM fit without its fold (folds
  stratified by class; multi-hot labels: shuffled, since label sets need not repeat)."""
  out = np.zeros((len(y), num_classes))
  if y.ndim == 2:
    split = KFold(folds, shuffle=True, random_state=seed).split(x)
  else:
    split = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)
  for fit_rows, held_rows in split:
    params, _, _ = fit(cfg, x[fit_rows], y[fit_rows], num_classes)
    out[held_rows] = np.asarray(svm.decision_function(params, jnp.asarray(x[held_rows])))
  return out


def _calibration(cfg, x, y, k: int, seed: int) -> tuple[np.ndarray | float, str]:
  """The temperature(s) dividing decision values, fit out of fold, and how.

  Single-label: one ``T`` for a softmax. Multi-label: one per label for its sigmoid. Folds
  need two examples of each class (of each side of each label) to hold one out.
  """
  multi = y.ndim == 2
  smallest = (int(min(y.sum(0).min(), (1 - y).sum(0).min())) if multi
              else int(np.bincount(y, minlength=k).min()))
  folds = min(CALIBRATION_FOLDS, smallest)
  if folds < 2:
    short = ("a label has fewer than 2 positive or negative train examples; sigmoid" if multi
             else "a class has fewer than 2 train examples; softmax")
    method = f"none: {short} of the raw SVM decision values"
    logging.warning("Cannot calibrate the SVM: %s", method)
    return (np.ones(k) if multi else 1.0), method
  held_out = out_of_fold_decisions(cfg, x, y, k, folds, seed)
  if multi:
    return (calibration.fit_label_temperatures(held_out, y),
            f"per-label temperature scaling of the SVM decision values (sigmoid), each T fit "
            f"on {folds}-fold out-of-fold decision values of the train split")
  return (calibration.fit_temperature(held_out, y),
          f"temperature scaling of the SVM decision values, T fit on {folds}-fold "
          f"out-of-fold decision values of the train split")


def classify(cfg, codes: dict[str, np.ndarray], labels: dict[str, np.ndarray], class_names, *,
             ids=None, workdir: Path | None = None, seed: int = 0,
             graded: bool = False) -> dict:
  """Fits the SVM on ``codes['train']``; flat metrics of every role, and for ``test``
  (example ``ids`` given) calibrated probabilities, intervals, predictions CSV and plots.
  Multi-hot labels train one binary SVM per label, scored as multi-label."""
  k = len(class_names)
  x, y = np.asarray(codes["train"]), np.asarray(labels["train"])
  multi = y.ndim == 2
  params, state, svm_cfg = fit(cfg, x, y, k)
  if workdir is not None:
    save_npz(Path(workdir) / SVM_FILE, w=np.asarray(params.w), b=np.asarray(params.b))
  results = {"svm/iterations": int(state.iteration),
             "svm/converged": float(svm.converged(state, svm_cfg))}
  temperature, results["calibration/method"] = _calibration(cfg, x, y, k, seed)
  results["calibration/temperature"] = (np.asarray(temperature).tolist() if multi
                                        else temperature)
  for role, features in codes.items():
    decisions = np.asarray(svm.decision_function(params, jnp.asarray(features)))
    metrics = (metrics_lib.multi_label(decisions, labels[role], class_names) if multi
               else metrics_lib.single_label(decisions, labels[role], class_names))
    del metrics["loss"]  # Cross-entropy of SVM margins means nothing.
    if role == "test" and ids is not None:
      scaled = decisions / temperature
      metrics.update(evaluation.final(
          workdir, role, ids, labels[role],
          calibration.sigmoid(scaled) if multi else calibration.softmax(scaled),
          class_names, probabilities=not multi, graded=graded))
    results.update({f"{role}/{k}": v for k, v in metrics.items()})
  return results
