"""Paired tests for two classifiers scored on the same examples.

- McNemar's exact test on correctness: only the discordant examples (one run right, the
  other wrong) carry information; under the null each is equally likely to go either
  way, so their split is Binomial(b + c, 1/2) (scipy's two-sided binomial test).
- DeLong, DeLong & Clarke-Pearson (1988) for two correlated ROC AUCs, in the midrank
  form of Sun & Xu (2014): each AUC's structural components (per positive, the share of
  negatives it outranks; per negative, the share of positives outranking it) give the
  covariance of the two AUCs, hence a z statistic for their difference. scikit-learn and
  scipy have no DeLong test, so it is written here and tested against the definition.
  The covariance needs two positives and two negatives; with fewer, or when it is zero
  while the AUCs differ (a perfect ranking against a constant one), the test is undefined
  and its z and p are NaN rather than a number the data cannot support.
"""
import numpy as np
from scipy import stats


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
  """``b`` (a right, b wrong), ``c`` (a wrong, b right) and the exact two-sided p-value."""
  a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  b, c = int((a & ~b_).sum()), int((~a & b_).sum())
  p = stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
  return {"a_only_correct": b, "b_only_correct": c, "p_value": float(p)}


def _structural_components(positive: np.ndarray, score: np.ndarray):
  """``(auc, v10, v01)``: the AUC, each positive's and each negative's component."""
  x, y = score[positive], score[~positive]
  m, n = len(x), len(y)
  tz = stats.rankdata(np.concatenate([x, y]))  # Midranks: ties count one half.
  v10 = (tz[:m] - stats.rankdata(x)) / n        # Share of negatives below each positive.
  v01 = 1.0 - (tz[m:] - stats.rankdata(y)) / m  # Share of positives above each negative.
  return v10.mean(), v10, v01


def delong(positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict:
  """DeLong's test of ``AUC(a) = AUC(b)`` for the boolean ``positive``; two-sided p-value,
  NaN where the covariance cannot be estimated (see the module's docstring)."""
  positive = np.asarray(positive, bool)
  m, n = int(positive.sum()), int((~positive).sum())
  if not m or not n:
    raise ValueError("DeLong's test needs both positive and negative examples")
  auc_a, v10_a, v01_a = _structural_components(positive, np.asarray(score_a, np.float64))
  auc_b, v10_b, v01_b = _structural_components(positive, np.asarray(score_b, np.float64))
  nan = float("nan")
  if m < 2 or n < 2:  # One component's sample covariance is undefined (ddof 1).
    return {"auc_a": float(auc_a), "auc_b": float(auc_b), "variance_a": nan,
            "variance_b": nan, "z": nan, "p_value": nan, "difference/ci95_low": nan,
            "difference/ci95_high": nan}
  cov = np.cov(np.stack([v10_a, v10_b])) / m + np.cov(np.stack([v01_a, v01_b])) / n
  var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
  diff = auc_a - auc_b
  if var <= 0:  # Same AUC, no spread: no evidence of a difference; otherwise undefined.
    z, p, half = (0.0, 1.0, 0.0) if diff == 0 else (nan, nan, nan)
  else:
    z = diff / np.sqrt(var)
    p = 2 * stats.norm.sf(abs(z))
    half = stats.norm.ppf(0.975) * np.sqrt(var)
  # The interval of the difference the same normal approximation gives: it excludes 0
  # exactly when p < 0.05, so a table's interval and p-value never disagree.
  return {"auc_a": float(auc_a), "auc_b": float(auc_b), "variance_a": float(cov[0, 0]),
          "variance_b": float(cov[1, 1]), "z": float(z), "p_value": float(p),
          "difference/ci95_low": float(diff - half), "difference/ci95_high": float(diff + half)}
