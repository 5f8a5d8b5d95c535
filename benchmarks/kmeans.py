"""k-means for the VLAD vocabulary (system 5) against scikit-learn and faiss.

medjax's side is ``medjax.features.kmeans.fit``, the driver the VLAD pipeline runs
(without its checkpoint file, which the pipeline adds for resuming).

Descriptors stand in for VGG conv maps: non-negative (post-ReLU), sparse-ish, drawn
around a few hundred modes in 512 dimensions. Every solver gets one initialisation
(``n_init=1``, faiss ``nredo=1``) and the same iteration cap. Against scikit-learn both
seed with k-means++ inside the timed fit and stop at the same relative tolerance. faiss
seeds with random points, which on these descriptors ends some 40 % above the others'
inertia, so against faiss both sides start from the same k-means++ seeds (computed
untimed), only the Lloyd iterations are timed, and both run to the same fixed point:
faiss stops once an iteration leaves its objective unchanged (``early_stop_threshold``
0), medjax with ``tol=0`` once an iteration moves no centre, so they end at equal
inertia.
Inertia (sum of squared distances to the closest centre) of every result is computed
the same way, by ``medjax.features.kmeans.inertia``, and reported next to the times.
"""
import faiss
import jax
import numpy as np
from sklearn.cluster import KMeans

from benchmarks import timing
from medjax.features import kmeans


def descriptors(n: int, dim: int = 512, modes: int = 300, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  centres = rng.gamma(0.5, 1.0, (modes, dim)).astype(np.float32)
  x = centres[rng.integers(0, modes, n)] + rng.normal(0.0, 0.5, (n, dim)).astype(np.float32)
  return np.maximum(x, 0.0)


def kmeans_case(n: int, k: int, max_iter: int, repeats: int) -> list[dict]:
  x = descriptors(n)
  x_dev = jax.device_put(x)
  key = jax.random.PRNGKey(0)

  def medjax_fit():
    return kmeans.fit(x_dev, k, key=key, n_init=1, max_iter=max_iter, tol=1e-4).centers

  seeds = kmeans.init(x_dev, k, key=key)

  def medjax_fit_from_seeds():
    return kmeans.fit(x_dev, k, key=key, max_iter=max_iter, tol=0.0,
                      init_centers=seeds).centers

  def sklearn_fit():
    return KMeans(k, init="k-means++", n_init=1, max_iter=max_iter, tol=1e-4,
                  algorithm="lloyd", random_state=0).fit(x).cluster_centers_

  def faiss_fit():
    # No subsampling (faiss trains on 256 points per centroid by default).
    model = faiss.Kmeans(x.shape[1], k, niter=max_iter, nredo=1, seed=0,
                         max_points_per_centroid=n)
    model.train(x, init_centroids=np.asarray(seeds))
    return model.centroids

  def quality(who, centres):
    return {"inertia": float(kmeans.inertia(jax.device_put(np.asarray(centres, np.float32)),
                                            x_dev))}

  name = f"kmeans/{n}x512_k{k}_iter{max_iter}"
  return (timing.alternate_fits(name, medjax_fit, {"sklearn_kmeans": sklearn_fit},
                                repeats=repeats, quality=quality)
          + timing.alternate_fits(f"{name}_same_seeds", medjax_fit_from_seeds,
                                  {"faiss_kmeans": faiss_fit}, repeats=repeats,
                                  quality=quality))


def cases(quick: bool) -> list[timing.Case]:
  repeats = 1 if quick else 3
  return [timing.Case(f"kmeans/k{k}", lambda k=k: kmeans_case(200_000, k, 50, repeats))
          for k in (64, 256)]
