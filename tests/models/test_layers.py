import numpy as np

from medjax.models.layers import local_response_norm


def test_lrn_matches_caffe_formula():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 3, 7)).astype(np.float32)
  size, alpha, beta, k = 5, 1e-2, 0.75, 2.0
  expected = np.empty_like(x)
  for c in range(7):
    lo, hi = max(0, c - 2), min(7, c + 3)
    expected[..., c] = x[..., c] / (k + alpha / size * (x[..., lo:hi] ** 2).sum(-1)) ** beta
  np.testing.assert_allclose(local_response_norm(x, size, alpha, beta, k), expected, rtol=1e-5)
