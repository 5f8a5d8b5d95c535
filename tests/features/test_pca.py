"""PCA against scikit-learn on both routes, and streamed accumulation."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from medjax.features import pca
from tests.conftest import run_on_devices



def _data(n, d, seed=0):
  """Well separated spectrum so that the leading components are well defined."""
  rng = np.random.default_rng(seed)
  basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
  scales = 10.0 * 0.7 ** np.arange(d)
  x = (rng.normal(size=(n, d)) * scales) @ basis.T + 3.0
  return x.astype(np.float32)


def _align_signs(a, b):
  return a * np.sign(np.sum(a * b, axis=1, keepdims=True))


@pytest.mark.parametrize("n,d", [(600, 40), (60, 300)], ids=["covariance", "gram"])
def test_matches_sklearn(n, d):
  x = _data(n, d)
  ref = PCA(10, svd_solver="full").fit(x.astype(np.float64))
  params = pca.fit(x, 10)
  components = np.asarray(params.components)
  np.testing.assert_allclose(_align_signs(components, ref.components_), ref.components_,
                             atol=2e-3)
  np.testing.assert_allclose(params.explained_variance, ref.explained_variance_, rtol=1e-3)
  np.testing.assert_allclose(params.mean, ref.mean_, rtol=1e-5)
  np.testing.assert_allclose(components @ components.T, np.eye(10), atol=1e-4)
  # svd_flip convention: the largest-magnitude entry of every component is positive.
  assert np.all(components[np.arange(10), np.abs(components).argmax(1)] > 0)


@pytest.mark.parametrize("n,d", [(600, 40), (60, 300)], ids=["covariance", "gram"])
def test_whitened_transform_matches_sklearn(n, d):
  x = _data(n, d)
  ref = PCA(5, whiten=True, svd_solver="full").fit(x.astype(np.float64))
  params = pca.fit(x, 5, whiten=True)
  got = np.asarray(pca.transform(params, x[:20]))
  expected = ref.transform(x[:20].astype(np.float64))
  np.testing.assert_allclose(_align_signs(got.T, expected.T).T, expected, atol=3e-3)
  np.testing.assert_allclose(np.var(pca.transform(params, x), axis=0, ddof=1), 1.0, rtol=1e-3)


def test_streamed_accumulate_equals_in_memory():
  x = _data(1000, 32, seed=1)
  stats, size = None, 300
  for start in range(0, len(x), size):  # ragged last chunk, padded and masked
    chunk = x[start:start + size]
    mask = np.arange(size) < len(chunk)
    stats = pca.accumulate(stats, np.pad(chunk, ((0, size - len(chunk)), (0, 0))), mask)
  streamed = pca.finalize(stats, 8)
  in_memory = pca.fit(x, 8)
  assert float(stats.count) == len(x)
  np.testing.assert_allclose(streamed.mean, in_memory.mean, rtol=1e-5)
  np.testing.assert_allclose(streamed.components, in_memory.components, atol=1e-4)
  np.testing.assert_allclose(streamed.explained_variance, in_memory.explained_variance, rtol=1e-4)


def test_rejects_too_many_components():
  with pytest.raises(ValueError):
    pca.fit(_data(20, 10), 11)


@pytest.mark.slow
def test_sharded_examples_match_unsharded():
  script = """
      import jax, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from medjax.features import pca
      rng = np.random.default_rng(0)
      tall = (rng.normal(size=(200, 16)) * np.arange(1, 17)).astype(np.float32)
      wide = (rng.normal(size=(8, 40)) * np.arange(1, 41)).astype(np.float32)
      data = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
      for x in (tall, wide):  # covariance route, then Gram route (D > N)
        ref = pca.fit(x, 4)
        got = pca.fit(jax.device_put(x, data), 4)
        np.testing.assert_allclose(got.components, ref.components, atol=1e-4)
        np.testing.assert_allclose(pca.transform(got, jax.device_put(x, data)),
                                   pca.transform(ref, x), rtol=1e-4, atol=1e-4)
      print("ok")
  """
  run_on_devices(script)
