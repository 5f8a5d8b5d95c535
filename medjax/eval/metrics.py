"""Classification metrics on host numpy arrays, single- and multi-label.

Evaluation gathers every example's logits (padding removed) and computes metrics here, so
they are exact whatever the batch size or device count. scikit-learn does the counting.
A per-class precision or recall the data cannot define (a class never predicted, a class
absent from the split) is left out rather than written as 0, as in ``clinical``.
"""
import numpy as np
from sklearn import metrics as skm


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return float(-logp[np.arange(len(labels)), labels].mean())


def sigmoid_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
  """Binary cross-entropy summed over labels, averaged over examples (as in training)."""
  per_slot = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
  return float(per_slot.sum(-1).mean())


def _per_class(out: dict, class_names, precision, recall) -> None:
  """Adds ``precision/<c>`` and ``recall/<c>``, leaving out the undefined (NaN) ones, since a
  0 there would read as a class the model always gets wrong."""
  for name, p, r in zip(class_names, precision, recall):
    for key, value in ((f"precision/{name}", p), (f"recall/{name}", r)):
      if not np.isnan(value):
        out[key] = float(value)


def single_label(logits: np.ndarray, labels: np.ndarray, class_names) -> dict:
  """Accuracy, loss, per-class recall/precision and the confusion matrix (rows = truth)."""
  k = len(class_names)
  pred = logits.argmax(-1)
  cm = skm.confusion_matrix(labels, pred, labels=np.arange(k))
  recall = skm.recall_score(labels, pred, labels=np.arange(k), average=None,
                            zero_division=np.nan)
  precision = skm.precision_score(labels, pred, labels=np.arange(k), average=None,
                                  zero_division=np.nan)
  out = {
      "accuracy": float(skm.accuracy_score(labels, pred)),
      "balanced_accuracy": float(recall[cm.sum(1) > 0].mean()),
      "loss": softmax_cross_entropy(logits, labels),
      "num_examples": int(len(labels)),
      "confusion_matrix": cm.tolist(),
  }
  _per_class(out, class_names, precision, recall)
  return out


def multi_label_scores(pred: np.ndarray, truth: np.ndarray) -> dict:
  """ImageCLEF 2015 clustering measures on binary ``(n, labels)`` arrays.

  - exact match: the predicted label set equals the true set (all-negative included);
  - any match: at least one label is predicted correctly as present, or both sets are
    empty (a true negative image predicted as such);
  - Hamming similarity: the fraction of the label slots predicted correctly.
  """
  pred, truth = pred.astype(bool), truth.astype(bool)
  both_empty = ~pred.any(1) & ~truth.any(1)
  return {
      "exact_match": float((pred == truth).all(1).mean()),
      "any_match": float(((pred & truth).any(1) | both_empty).mean()),
      "hamming_similarity": float((pred == truth).mean()),
  }


def multi_label(logits: np.ndarray, targets: np.ndarray, class_names, threshold: float = 0.0) -> dict:
  """Multi-label metrics for one-vs-all logits; a label is predicted when its logit > 0."""
  pred = logits > threshold
  out = multi_label_scores(pred, targets)
  out["loss"] = sigmoid_cross_entropy(logits, targets)
  out["num_examples"] = int(len(targets))
  precision = skm.precision_score(targets, pred, average=None, zero_division=np.nan)
  recall = skm.recall_score(targets, pred, average=None, zero_division=np.nan)
  _per_class(out, class_names, precision, recall)
  return out
