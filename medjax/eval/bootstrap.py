"""Stratified bootstrap 95 % intervals, vectorised over resamples.

The measures that are not a single proportion (ROC AUC, balanced accuracy, Hamming
similarity, a paired AUC difference) get their intervals here; a proportion's (accuracy,
sensitivity, ...) is its Wilson score interval, in :mod:`medjax.eval.clinical`.
A resample draws, within each stratum (class), as many examples as the stratum holds, with
replacement: every resample keeps the split's class counts, so AUC and balanced accuracy
stay defined, as in the test set reviewers see. Multi-label images are resampled whole,
unstratified. A resample is represented by its multiplicities (how often each example was
drawn), so a measure over all resamples is a matrix product instead of a Python loop;
resamples are drawn in blocks of ``BLOCK`` to bound memory. Intervals are the 2.5 and 97.5
percentiles (percentile bootstrap). The generator is seeded and the blocking fixed, so a
rerun gives the same intervals exactly.
"""
import numpy as np

RESAMPLES = 2000
SEED = 0
BLOCK = 250

# How results.json and the reports name the intervals (``<split>/intervals/method``).
SINGLE_LABEL_METHOD = (
    "95 % intervals: Wilson score for proportions (accuracy, sensitivity, specificity, PPV, "
    f"NPV); percentile bootstrap ({RESAMPLES} resamples stratified by class, seed {SEED}) "
    "for ROC AUC and balanced accuracy")
MULTI_LABEL_METHOD = (
    "95 % intervals: Wilson score for proportions (exact match, any match, per-label "
    f"sensitivity, specificity, PPV, NPV); percentile bootstrap ({RESAMPLES} resamples of "
    f"whole images, unstratified, seed {SEED}) for Hamming similarity and per-label ROC AUC")


def multiplicities(strata: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED):
  """Yields ``(b, n)`` arrays of draw counts, ``resamples`` rows in all, stratified."""
  strata = np.asarray(strata)
  n = len(strata)
  groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
  rng = np.random.default_rng(seed)
  for start in range(0, resamples, BLOCK):
    b = min(BLOCK, resamples - start)
    rows = np.arange(b)[:, None] * n
    draws = np.concatenate([g[rng.integers(0, len(g), (b, len(g)))] for g in groups], axis=1)
    yield np.bincount((rows + draws).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def weighted_auc(weights: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
  """ROC AUC of every row of ``weights`` (example multiplicities): the Mann-Whitney
  statistic with tied scores counted one half, in one sort and one cumulative sum."""
  positive = np.asarray(positive, bool)
  order = np.argsort(score, kind="stable")
  s, pos = np.asarray(score)[order], positive[order]
  w = weights[:, order]
  # First and one-past-last sorted position of each example's group of tied scores.
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
  group = np.searchsorted(starts, np.arange(len(s)), side="right") - 1
  first, last = starts[group], np.r_[starts[1:], len(s)][group]
  neg_cum = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w * ~pos, axis=1)], axis=1)
  below = neg_cum[:, first]
  tied = neg_cum[:, last] - below
  wp = w * pos
  num = (wp * (below + 0.5 * tied)).sum(1)
  den = wp.sum(1) * (w * ~pos).sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def interval(values: np.ndarray) -> tuple[float, float]:
  """The 95 % percentile interval of resampled values (NaN resamples left out)."""
  values = np.asarray(values, np.float64)
  if np.isnan(values).all():
    return float("nan"), float("nan")
  low, high = np.nanpercentile(values, [2.5, 97.5])
  return float(low), float(high)


def _collect(strata, statistics: dict, resamples: int, seed: int) -> dict:
  """``{key/ci95_low, key/ci95_high}`` of ``statistics``: ``{key: fn(weights) -> (b,)}``."""
  values = {key: [] for key in statistics}
  for w in multiplicities(strata, resamples, seed):
    for key, fn in statistics.items():
      values[key].append(fn(w))
  out = {}
  for key, parts in values.items():
    low, high = interval(np.concatenate(parts))
    if not np.isnan(low):  # Left out where no resample defines it, as the estimate is.
      out[f"{key}/ci95_low"], out[f"{key}/ci95_high"] = low, high
  return out


def single_label(labels: np.ndarray, scores: np.ndarray, class_names, *,
                 resamples: int = RESAMPLES, seed: int = SEED) -> dict:
  """Intervals of balanced accuracy and ROC AUC for ``(n, k)`` scores (prediction =
  argmax), stratified by class (the proportions' are Wilson's, in ``clinical``)."""
  labels = np.asarray(labels)
  k = len(class_names)
  correct = (scores.argmax(1) == labels).astype(np.float64)
  present = [c for c in range(k) if (labels == c).any()]
  stats = {"balanced_accuracy": lambda w: np.mean(
      [w[:, labels == c] @ correct[labels == c] / (labels == c).sum() for c in present], 0)}
  if k == 2:
    stats["roc_auc"] = lambda w: weighted_auc(w, labels == 1, scores[:, 1])
  else:
    stats["roc_auc"] = lambda w: np.nanmean(
        [weighted_auc(w, labels == c, scores[:, c]) for c in present], 0)
  return _collect(labels, stats, resamples, seed)


def multi_label(targets: np.ndarray, probs: np.ndarray, class_names, threshold: float = 0.5,
                *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
  """Intervals of Hamming similarity and each label's AUC (exact and any match, being
  proportions, get Wilson's in ``clinical``).

  Not stratified: label sets are too many to stratify by, so an image is resampled whole
  (its labels stay together); a resample without a positive of a label leaves that
  label's AUC undefined there, and the interval is taken over the others.
  """
  targets = np.asarray(targets, bool)
  n = len(targets)
  hamming = ((probs > threshold) == targets).mean(1)
  stats = {"hamming_similarity": lambda w: w @ hamming / n}
  for j, name in enumerate(class_names):
    if targets[:, j].any() and not targets[:, j].all():
      stats[f"roc_auc/{name}"] = (lambda j: lambda w: weighted_auc(w, targets[:, j],
                                                                    probs[:, j]))(j)
  return _collect(np.zeros(n, int), stats, resamples, seed)


def paired_auc_difference(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, *,
                          resamples: int = RESAMPLES, seed: int = SEED) -> dict:
  """Paired stratified bootstrap of ``AUC(a) - AUC(b)`` (macro one-vs-rest) on the same
  examples: both runs are scored on every resample. Two-sided p-value: twice the smaller
  share of resampled differences on either side of zero, as ``(1 + count) / (1 + B)``
  (Davison & Hinkley, 1997), since ``B`` resamples cannot show a p-value below ``1 / B``
  and 0 would claim certainty they do not give."""
  labels = np.asarray(labels)
  k = scores_a.shape[1]
  present = [c for c in range(k) if (labels == c).any() and not (labels == c).all()]

  def macro(w, scores):
    if k == 2:
      return weighted_auc(w, labels == 1, scores[:, 1])
    return np.mean([weighted_auc(w, labels == c, scores[:, c]) for c in present], 0)

  diffs = np.concatenate([macro(w, scores_a) - macro(w, scores_b)
                          for w in multiplicities(labels, resamples, seed)])
  side = min((diffs <= 0).sum(), (diffs >= 0).sum())
  p = min(1.0, 2 * (1 + side) / (1 + len(diffs)))
  low, high = interval(diffs)
  ones = np.ones((1, len(labels)))
  auc_a, auc_b = float(macro(ones, scores_a)[0]), float(macro(ones, scores_b)[0])
  return {"auc_a": auc_a, "auc_b": auc_b, "difference": auc_a - auc_b,
          "difference/ci95_low": low, "difference/ci95_high": high, "p_value": float(p)}
