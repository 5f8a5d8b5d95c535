"""The measures medical-imaging papers report beyond accuracy, on host numpy arrays.

ROC AUC, average precision, each class's sensitivity, specificity, PPV and NPV (the class
against the rest), macro F1, Cohen's kappa and, where scores are probabilities, log loss
and expected calibration error. scikit-learn computes every one but ECE, which it lacks.
A binary task's positive class is its second one (NORMAL, PNEUMONIA -> PNEUMONIA), as
scikit-learn takes label 1; a multi-class AUC is the macro mean of one-vs-rest AUCs.
A measure that the data cannot define (the AUC of a class absent from the split, the PPV
of a class never predicted, the F1 of a class neither present nor predicted) is left out,
so ``results.json`` holds no NaN (invalid JSON).

Every proportion (accuracy, sensitivity, specificity, PPV, NPV; multi-label exact and any
match) has its 95 % Wilson score interval (Wilson, 1927; Brown, Cai & DasGupta, 2001),
computed from the same counts as its estimate: it stays inside [0, 1] and keeps a nonzero
width at 0 % or 100 %, where a percentile bootstrap collapses onto the estimate.
"""
import numpy as np
from scipy import stats
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


def wilson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
  """The Wilson score interval of ``successes / trials``; NaNs when ``trials`` is 0.

  Why: Wald and percentile-bootstrap intervals have zero width at 0 or 1 and under-cover
  on the small test sets medical studies have; the score interval does neither."""
  if not trials:
    return float("nan"), float("nan")
  ci = stats.binomtest(int(successes), int(trials)).proportion_ci(level, method="wilson")
  p = successes / trials
  # Exact at the boundaries (rounding would otherwise leave 1.0 outside [low, 0.99..9]).
  low = 0.0 if successes == 0 else min(ci.low, p)
  high = 1.0 if successes == trials else max(ci.high, p)
  return float(low), float(high)


def _proportion(out: dict, key: str, successes, trials) -> None:
  """Adds ``key`` (``successes / trials``) and its Wilson ``ci95_low``/``ci95_high``."""
  out[key] = _ratio(successes, trials)
  out[f"{key}/ci95_low"], out[f"{key}/ci95_high"] = wilson(int(successes), int(trials))


def _counts_measures(out: dict, name: str, tp, fp, fn, tn) -> None:
  """Sensitivity, specificity, PPV and NPV of one class (or label), with intervals."""
  _proportion(out, f"sensitivity/{name}", tp, tp + fn)
  _proportion(out, f"specificity/{name}", tn, tn + fp)
  _proportion(out, f"ppv/{name}", tp, tp + fp)
  _proportion(out, f"npv/{name}", tn, tn + fn)


def _f1_macro(truth, pred, **kwargs) -> float:
  """Macro F1 over the classes (labels) where F1 is defined: a class neither present nor
  predicted has no F1, and counting it as 0 would lower the mean for nothing it did."""
  return float(skm.f1_score(truth, pred, average="macro", zero_division=np.nan, **kwargs))


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
  """Clinical measures of ``(n, k)`` class scores (prediction = argmax) against ``labels``:
  accuracy and balanced accuracy too, so every interval's estimate comes from here.

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
  _proportion(out, "accuracy", int(tp.sum()), len(labels))
  out["balanced_accuracy"] = float(np.mean((tp / np.maximum(tp + fn, 1))[tp + fn > 0]))
  for c, name in enumerate(class_names):
    _counts_measures(out, name, tp[c], fp[c], fn[c], tn[c])
  out["f1_macro"] = _f1_macro(labels, pred, labels=np.arange(k))
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


def _match_measures(targets: np.ndarray, pred: np.ndarray) -> dict:
  """Exact and any match (Wilson intervals) and Hamming similarity, as ``metrics`` has them."""
  out = {}
  both_empty = ~pred.any(1) & ~targets.any(1)
  _proportion(out, "exact_match", int((pred == targets).all(1).sum()), len(targets))
  _proportion(out, "any_match", int(((pred & targets).any(1) | both_empty).sum()), len(targets))
  out["hamming_similarity"] = float((pred == targets).mean())
  return out


def multi_label(targets: np.ndarray, probs: np.ndarray, class_names,
                threshold: float = 0.5) -> dict:
  """Exact match, any match, Hamming similarity; per-label AUC, average precision,
  sensitivity, specificity, PPV and NPV of ``(n, L)`` label probabilities (a label is
  predicted above ``threshold``), and their macro means; Wilson intervals of proportions."""
  targets = np.asarray(targets, bool)
  pred = probs > threshold
  out = _match_measures(targets, pred)
  aucs, aps = [], []
  for j, name in enumerate(class_names):
    aucs.append(binary_auc(targets[:, j], probs[:, j]))
    aps.append(binary_average_precision(targets[:, j], probs[:, j]))
    t, p = targets[:, j], pred[:, j]
    out[f"roc_auc/{name}"] = aucs[-1]
    _counts_measures(out, name, (t & p).sum(), (~t & p).sum(), (t & ~p).sum(), (~t & ~p).sum())
  known = ~np.isnan(aucs)
  out["roc_auc"] = float(np.mean(np.asarray(aucs)[known])) if known.any() else float("nan")
  out["average_precision"] = float(np.nanmean(aps)) if not np.isnan(aps).all() else float("nan")
  out["f1_macro"] = _f1_macro(targets, pred)
  return defined(out)
