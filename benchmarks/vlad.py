"""VLAD encoding (system 5): images/s against a straightforward numpy encoder.

Each image is VGG19's block5 map at 224 (14 x 14 = 196 local descriptors of 512), encoded
against a 64-word vocabulary with the pipeline's default normalisation (global L2). The
peer assigns with the same matmul distance form, sums residuals with a one-hot matmul and
normalises: the numpy code one would write (BLAS does the heavy lifting).
"""
import jax
import numpy as np

from benchmarks import timing
from benchmarks.kmeans import descriptors
from medjax.features import vlad


def numpy_vlad(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
  """``(B, N, D)`` descriptors -> ``(B, k * D)`` L2-normalised VLAD vectors."""
  b, n, d = x.shape
  k = centres.shape[0]
  flat = x.reshape(b * n, d)
  dist = (flat * flat).sum(1)[:, None] - 2.0 * flat @ centres.T + (centres * centres).sum(1)
  onehot = np.eye(k, dtype=x.dtype)[dist.argmin(1)].reshape(b, n, k)
  v = np.einsum("bnk,bnd->bkd", onehot, x, optimize=True) - onehot.sum(1)[..., None] * centres
  v = v.reshape(b, k * d)
  norm = np.linalg.norm(v, axis=1, keepdims=True)
  return v / np.where(norm > 0, norm, 1.0)


def vlad_case(images: int, repeats: int, per_image: int = 196, k: int = 64) -> dict:
  x = descriptors(images * per_image).reshape(images, per_image, -1)
  centres = x.reshape(-1, x.shape[-1])[np.random.default_rng(1).choice(
      images * per_image, k, replace=False)]
  x_dev, centres_dev = jax.device_put(x), jax.device_put(centres)
  ours = np.asarray(vlad.vlad(x_dev, centres_dev))
  max_abs_diff = float(np.abs(ours - numpy_vlad(x, centres)).max())
  return timing.compare(f"vlad/{images}img_{per_image}x512_k{k}",
                        lambda: vlad.vlad(x_dev, centres_dev), "numpy",
                        lambda: numpy_vlad(x, centres), repeats=repeats, items=images,
                        max_abs_diff=max_abs_diff)


def cases(quick: bool) -> list[timing.Case]:
  repeats = 3 if quick else 7
  return [timing.Case("vlad", lambda: vlad_case(512, repeats))]
