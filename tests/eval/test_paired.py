"""McNemar's exact test against a published example, DeLong's test against its definition
computed pair by pair (an independent O(m n) computation)."""
import numpy as np
import pytest
from sklearn import metrics as skm

from medjax.eval import paired


def _pairs(b, c, concordant=(5, 3)):
  a = np.r_[np.ones(b), np.zeros(c), np.ones(concordant[0]), np.zeros(concordant[1])]
  bb = np.r_[np.zeros(b), np.ones(c), np.ones(concordant[0]), np.zeros(concordant[1])]
  return a.astype(bool), bb.astype(bool)


def test_mcnemar_exact_published_example():
  # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91: airway
  # hyper-responsiveness before/after, discordant pairs 1 and 7; exact conditional
  # p = 0.070, i.e. 2 * (C(8,0) + C(8,1)) / 2^8 = 18/256.
  result = paired.mcnemar_exact(*_pairs(1, 7))
  assert result["a_only_correct"] == 1 and result["b_only_correct"] == 7
  assert result["p_value"] == pytest.approx(18 / 256)
  assert round(result["p_value"], 3) == 0.070
  assert paired.mcnemar_exact(*_pairs(0, 0))["p_value"] == 1.0


def _delong_by_definition(positive, a, b):
  """DeLong et al. (1988), eqs. for V10 / V01 and S10 / S01, with an explicit kernel."""
  def components(s):
    x, y = s[positive], s[~positive]
    psi = (x[:, None] > y[None]) + 0.5 * (x[:, None] == y[None])
    return psi.mean(), psi.mean(1), psi.mean(0)
  (ta, v10a, v01a), (tb, v10b, v01b) = components(a), components(b)
  m, n = positive.sum(), (~positive).sum()
  s10 = np.array([[np.sum((u - u.mean()) * (v - v.mean())) / (m - 1) for v in (v10a, v10b)]
                  for u in (v10a, v10b)])
  s01 = np.array([[np.sum((u - u.mean()) * (v - v.mean())) / (n - 1) for v in (v01a, v01b)]
                  for u in (v01a, v01b)])
  cov = s10 / m + s01 / n
  return ta, tb, (ta - tb) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), cov


def test_delong_equals_the_pairwise_definition_with_ties():
  rng = np.random.default_rng(4)
  positive = rng.random(90) < 0.4
  a = np.round(positive * 0.8 + rng.normal(size=90), 1)      # Rounded: ties.
  b = np.round(positive * 0.3 + rng.normal(size=90) + 0.3 * a, 1)
  got = paired.delong(positive, a, b)
  auc_a, auc_b, z, cov = _delong_by_definition(positive, a, b)
  assert got["auc_a"] == pytest.approx(skm.roc_auc_score(positive, a))
  assert got["auc_a"] == pytest.approx(auc_a) and got["auc_b"] == pytest.approx(auc_b)
  assert got["variance_a"] == pytest.approx(cov[0, 0])
  assert got["z"] == pytest.approx(z)
  from scipy import stats
  assert got["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)))
  # The difference's interval: the same normal approximation, centred on the difference.
  half = 1.959964 * (auc_a - auc_b) / z
  assert got["difference/ci95_low"] == pytest.approx(auc_a - auc_b - half, rel=1e-5)
  assert got["difference/ci95_high"] == pytest.approx(auc_a - auc_b + half, rel=1e-5)
  assert (got["difference/ci95_low"] > 0 or got["difference/ci95_high"] < 0) == (
      got["p_value"] < 0.05)


def test_delong_of_identical_scores_finds_nothing():
  positive = np.array([True, False] * 10)
  s = np.arange(20.0)
  assert paired.delong(positive, s, s)["p_value"] == 1.0
  with pytest.raises(ValueError, match="both positive and negative"):
    paired.delong(np.ones(3, bool), s[:3], s[:3])
