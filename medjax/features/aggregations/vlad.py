"""``vlad``: every spatial position of the conv map is a local descriptor, encoded against
a k-means vocabulary fit on train (paper 5 fig. 6).

Descriptors are optionally L2-normalised (``vlad.descriptor_l2``, at extraction) and
PCA-reduced to ``vlad.descriptor_dims`` when wider than ``vlad.descriptor_pca_above``,
both fit on train only; k-means (k-means++ then Lloyd, resumable from
``<workdir>/kmeans/k<k>.npz``) runs on at most ``vlad.max_descriptors`` train descriptors
sampled with the seed; VLAD (power / intra options) -> L2 -> PCA to ``vlad.pca_dims`` fit
on train -> L2.
"""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from medjax.features import extract, kmeans, pca
from medjax.features import vlad as vlad_lib
from medjax.features.aggregations import Aggregation, register
from medjax.features.norm import l2_normalize


def _descriptors(maps):
  return maps.reshape(maps.shape[0], -1, maps.shape[-1])


def descriptor_sample(folder: Path, cap: int, seed: int) -> np.ndarray:
  """At most ``cap`` local descriptors of the split, drawn without replacement from ``seed``."""
  first, _ = next(extract.chunks(folder))
  total = extract.num_examples(folder) * _descriptors(first).shape[1]
  chosen = np.sort(np.random.default_rng(seed).choice(total, min(cap, total), replace=False))
  sample, offset = [], 0
  for maps, _ in extract.chunks(folder):
    flat = _descriptors(maps).reshape(-1, maps.shape[-1])
    inside = chosen[(chosen >= offset) & (chosen < offset + len(flat))]
    sample.append(flat[inside - offset])
    offset += len(flat)
  return np.concatenate(sample).astype(np.float32)


def _pca_state(params: pca.PCAParams) -> dict:
  return dict(params._asdict())


def _vlad_codes(cfg, state, maps):
  """Raw VLAD vectors ``(B, k * D)`` of unpooled maps ``(B, H, W, C)``."""
  desc = _descriptors(maps)
  if "descriptor_pca" in state:
    params = pca.PCAParams(**state["descriptor_pca"])
    desc = pca.transform(params, desc.reshape(-1, desc.shape[-1])).reshape(*desc.shape[:2], -1)
  return vlad_lib.vlad(desc, state["centers"], power_alpha=cfg.power_alpha or None,
                       intra_norm=cfg.intra_norm)


def encode(config, state, feats):
  (maps,) = feats
  codes = _vlad_codes(config.vlad, state, maps)
  if "pca" in state:
    codes = l2_normalize(pca.transform(pca.PCAParams(**state["pca"]), codes))
  return codes


def fit(stage):
  cfg, seed = stage.config.vlad, stage.config.seed
  sample = descriptor_sample(stage.single_scale("train"), cfg.max_descriptors, seed)
  state = {}
  if cfg.descriptor_dims and sample.shape[1] > cfg.descriptor_pca_above:
    reducer = pca.fit(jnp.asarray(sample), min(cfg.descriptor_dims, *sample.shape))
    sample = np.asarray(pca.transform(reducer, jnp.asarray(sample)))
    state["descriptor_pca"] = _pca_state(reducer)
  if len(sample) < cfg.k:
    raise ValueError(f"k-means with k={cfg.k} needs at least {cfg.k} descriptors; the sample "
                     f"has {len(sample)} (raise vlad.max_descriptors or use more images)")
  result = kmeans.fit(sample, cfg.k, key=jax.random.PRNGKey(seed), max_iter=cfg.kmeans_max_iter,
                      tol=cfg.kmeans_tol, checkpoint=stage.workdir / "kmeans" / f"k{cfg.k}.npz")
  state["centers"] = jnp.asarray(result.centers)
  scalars = {"kmeans/iterations": result.n_iter, "kmeans/converged": float(result.converged),
             "kmeans/inertia": result.inertia, "kmeans/descriptors": len(sample),
             "vlad/dims": cfg.k * int(sample.shape[1])}
  if cfg.pca_dims:
    # Filled in place: VLAD vectors are large (k * D floats per image), so no second copy.
    folder = stage.single_scale("train")
    train = np.empty((extract.num_examples(folder), scalars["vlad/dims"]), np.float32)
    row = 0
    for maps, _ in extract.chunks(folder):
      train[row:row + len(maps)] = _vlad_codes(cfg, state, jnp.asarray(maps))
      row += len(maps)
    train = jnp.asarray(train)
    state["pca"] = _pca_state(pca.fit(train, min(cfg.pca_dims, *train.shape)))
  return state, scalars


register(Aggregation("vlad", pool=False, fit=fit, encode=encode,
                     l2=lambda config: config.vlad.descriptor_l2))
