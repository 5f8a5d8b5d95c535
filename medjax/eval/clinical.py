"""The measures medical-imaging papers report beyond accuracy, on host numpy arrays.

ROC AUC, average precision, each class's sensitivity, specificity, PPV and NPV (the class
against the rest), macro F1, Cohen's kappa and, where scores are probabilities, log loss
and expected calibration error. scikit-learn computes every one but ECE, which it lacks.
A binary task's positive class is its second one (NORMAL, PNEUMONIA -> PNEUMONIA), as
scikit-learn takes label 1; a multi-class AUC is the macro mean of one-vs-rest AUCs.
A measure that the data cannot define (the AUC of a class absent from the split, the PPV
of a class never predicted) is left out, so ``results.json`` holds no NaN (invalid JSON).
"""
import numpy as np
from sklearn import metrics as skm

# Equal-width confidence bins of the ECE and the reliability diagram (Guo et al., 2017).
ECE_BINS = 15


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
  """ROC AUC of ``score`` for the boolean ``positive``; NaN when one side is empty."""
  positive = np.asarray(positive, bool)
  if positive.all() or not positive.any():
    return float("nan")
  return float(skm.roc_auc_score(positive, score))


def binary_average_precision(positive: np.ndarray, score: np.ndarray) -> float:
  positive = np.asarray(positive, bool)
  if not positive.any():
    return float("nan")
  return float(skm.average_precision_score(positive, score))


def one_vs_rest_counts(labels: np.ndarray, pred: np.ndarray, k: int):
  """``(tp, fp, fn, tn)``, each of shape ``(k,)``: class c against the rest."""
  cm = skm.confusion_matrix(labels, pred, labels=np.arange(k))
  tp = np.diag(cm)
  fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
  return tp, fp, fn, cm.sum() - tp - fp - fn


def _ratio(num, den) -> float:
  return float(num / den) if den else float("nan")


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS):
  """Top-label confidence binned: ``(mean confidence, accuracy, count)`` per bin."""
  conf = probs.max(1)
  correct = probs.argmax(1) == labels
  which = np.minimum((conf * bins).astype(int), bins - 1)
  count = np.bincount(which, minlength=bins)
  mean_conf = np.bincount(which, conf, bins) / np.maximum(count, 1)
  accuracy = np.bincount(which, correct, bins) / np.maximum(count, 1)
  return mean_conf, accuracy, count


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
  """Sum over bins of ``|accuracy - confidence|`` weighted by the bin's share of examples."""
  mean_conf, accuracy, count = reliability(probs, labels, bins)
  return float((np.abs(accuracy - mean_conf) * count).sum() / count.sum())


def single_label(labels: np.ndarray, scores: np.ndarray, class_names, *, probabilities: bool,
                 graded: bool = False) -> dict:
  """Clinical measures of ``(n, k)`` class scores (prediction = argmax) against ``labels``.

  ``probabilities``: the rows are a probability distribution, so log loss and ECE mean
  something. ``graded``: the classes are ordered grades, so quadratic kappa is reported.
  """
  k = len(class_names)
  pred = scores.argmax(1)
  out = {}
  if k == 2:
    out["roc_auc"] = binary_auc(labels == 1, scores[:, 1])
    out["average_precision"] = binary_average_precision(labels == 1, scores[:, 1])
  else:
    aucs = [binary_auc(labels == c, scores[:, c]) for c in range(k)]
    out["roc_auc"] = float(np.nanmean(aucs)) if not np.isnan(aucs).all() else float("nan")
    out["average_precision"] = float(np.nanmean(
        [binary_average_precision(labels == c, scores[:, c]) for c in range(k)]))
    out.update({f"roc_auc/{name}": a for name, a in zip(class_names, aucs)})
  tp, fp, fn, tn = one_vs_rest_counts(labels, pred, k)
  for c, name in enumerate(class_names):
    out[f"sensitivity/{name}"] = _ratio(tp[c], tp[c] + fn[c])
    out[f"specificity/{name}"] = _ratio(tn[c], tn[c] + fp[c])
    out[f"ppv/{name}"] = _ratio(tp[c], tp[c] + fp[c])
    out[f"npv/{name}"] = _ratio(tn[c], tn[c] + fn[c])
  out["f1_macro"] = float(skm.f1_score(labels, pred, labels=np.arange(k), average="macro",
                                       zero_division=0))
  out["kappa"] = float(skm.cohen_kappa_score(labels, pred, labels=np.arange(k),
                                             replace_undefined_by=np.nan))
  if graded:
    out["kappa_quadratic"] = float(skm.cohen_kappa_score(labels, pred, labels=np.arange(k),
                                                         weights="quadratic"))
  if probabilities:
    out["log_loss"] = float(skm.log_loss(labels, scores, labels=np.arange(k)))
    out["ece"] = expected_calibration_error(scores, labels)
  return defined(out)


def defined(measures: dict) -> dict:
  """``measures`` without the NaN ones."""
  return {k: v for k, v in measures.items() if not np.isnan(v)}


def multi_label(targets: np.ndarray, probs: np.ndarray, class_names,
                threshold: float = 0.5) -> dict:
  """Per-label AUC, average precision, sensitivity, specificity, PPV and NPV of ``(n, L)``
  label probabilities (a label is predicted above ``threshold``), and their macro means."""
  targets = np.asarray(targets, bool)
  pred = probs > threshold
  out = {}
  aucs, aps = [], []
  for j, name in enumerate(class_names):
    aucs.append(binary_auc(targets[:, j], probs[:, j]))
    aps.append(binary_average_precision(targets[:, j], probs[:, j]))
    t, p = targets[:, j], pred[:, j]
    tp, fp, fn, tn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum(), (~t & ~p).sum()
    out[f"roc_auc/{name}"] = aucs[-1]
    out[f"sensitivity/{name}"] = _ratio(tp, tp + fn)
    out[f"specificity/{name}"] = _ratio(tn, tn + fp)
    out[f"ppv/{name}"] = _ratio(tp, tp + fp)
    out[f"npv/{name}"] = _ratio(tn, tn + fn)
  known = ~np.isnan(aucs)
  out["roc_auc"] = float(np.mean(np.asarray(aucs)[known])) if known.any() else float("nan")
  out["average_precision"] = float(np.nanmean(aps)) if not np.isnan(aps).all() else float("nan")
  out["f1_macro"] = float(skm.f1_score(targets, pred, average="macro", zero_division=0))
  return defined(out)
