"""System 3's unsupervised baselines (Ahn et al., table 2), each fit on the train split's
pooled, L2-normalised backbone features: ``sparse_coding`` (scikit-learn's
``MiniBatchDictionaryLearning``), ``ica`` (``FastICA``) and ``ssae`` (the 2-layer stacked
sparse auto-encoder of ``medjax.features.sparse_autoencoder``).

Each keeps only the arrays its transform needs (dictionary, unmixing matrix, encoder
weights), so a saved run encodes new images without pickled estimators. Sparse coding's
lasso has no closed form, so its encode calls scikit-learn's ``sparse_encode`` on the
host (``jax.pure_callback``): it runs under jit, but cannot be exported or differentiated.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from medjax.features import sparse_autoencoder
from medjax.features.aggregations import Aggregation, Stage, register
from medjax.features.norm import l2_normalize

TRANSFORM_MAX_ITER = 1000  # MiniBatchDictionaryLearning's transform_max_iter default.


def _sparse_coding_fit(stage: Stage):
  from sklearn.decomposition import MiniBatchDictionaryLearning
  cfg = stage.config.baseline
  model = MiniBatchDictionaryLearning(
      n_components=cfg.components, alpha=cfg.alpha, batch_size=256, max_iter=cfg.max_iter,
      transform_algorithm="lasso_cd", transform_alpha=cfg.alpha,
      transform_max_iter=TRANSFORM_MAX_ITER, random_state=stage.config.seed)
  model.fit(stage.pooled("train"))
  return {"components": model.components_}, {}


def _lasso_codes(alpha, x, dictionary):
  from sklearn.decomposition import sparse_encode
  return sparse_encode(np.asarray(x), np.asarray(dictionary), algorithm="lasso_cd",
                       alpha=alpha, max_iter=TRANSFORM_MAX_ITER).astype(np.float32)


def _sparse_coding_encode(config, state, feats):
  (x,) = feats
  dictionary = state["components"]
  out = jax.ShapeDtypeStruct((x.shape[0], dictionary.shape[0]), jnp.float32)
  codes = jax.pure_callback(functools.partial(_lasso_codes, float(config.baseline.alpha)), out,
                            x, dictionary)
  return l2_normalize(codes)


def _ica_fit(stage: Stage):
  from sklearn.decomposition import FastICA
  cfg = stage.config.baseline
  model = FastICA(n_components=cfg.components, whiten="unit-variance", max_iter=cfg.max_iter,
                  random_state=stage.config.seed)
  model.fit(stage.pooled("train"))
  return {"mean": model.mean_, "components": model.components_}, {}


def _ica_encode(config, state, feats):
  del config
  (x,) = feats
  sources = (x - state["mean"]) @ state["components"].T  # FastICA.transform.
  return l2_normalize(sources.astype(jnp.float32))


def _ssae_fit(stage: Stage):
  model = sparse_autoencoder.from_config(stage.config.ssae, stage.config.seed)
  model.fit(stage.pooled("train"))
  return {"mean": model.mean, "std": model.std,
          "layers": {str(i): layer for i, layer in enumerate(model.layers)}}, {}


def _ssae_encode(config, state, feats):
  del config
  (x,) = feats
  h = (jnp.asarray(x, jnp.float32) - state["mean"]) / state["std"]
  for i in sorted(state["layers"], key=int):
    h = sparse_autoencoder.encode(state["layers"][i], h)
  return l2_normalize(h.astype(jnp.float32))


register(Aggregation("sparse_coding", pool=True, fit=_sparse_coding_fit,
                     encode=_sparse_coding_encode))
register(Aggregation("ica", pool=True, fit=_ica_fit, encode=_ica_encode))
register(Aggregation("ssae", pool=True, fit=_ssae_fit, encode=_ssae_encode))
