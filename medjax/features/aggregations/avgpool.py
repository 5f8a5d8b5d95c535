"""``avgpool``: the conv map's spatial average, L2-normalised (system 5's baseline, paper 5
fig. 5; also system 3's "transfer-learned CNN + SVM" row). Several ``features.scales`` are
concatenated, each L2-normalised at extraction, then the whole again. Nothing is fit."""
import jax.numpy as jnp

from medjax.features.aggregations import Aggregation, register
from medjax.features.norm import l2_normalize


def fit(stage):
  del stage
  return {}, {}


def encode(config, state, feats):
  del config, state
  return l2_normalize(jnp.concatenate(feats, axis=1))


register(Aggregation("avgpool", pool=True, fit=fit, encode=encode))
