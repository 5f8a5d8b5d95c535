"""System 3's stacked sparse auto-encoder baseline on tiny data."""
import jax
import jax.numpy as jnp
import numpy as np

from medjax.features import sparse_autoencoder as ssae


def test_layer_loss_terms():
  """With W = 0 the hidden units sit at sigmoid(0) = 0.5 and the decoder outputs b2."""
  cfg = ssae.SSAEConfig(sparsity=0.1, sparsity_weight=2.0, weight_decay=0.5)
  params = jax.tree.map(jnp.zeros_like, ssae.init_layer(jax.random.key(0), 3, 2))
  x = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
  kl = 0.1 * np.log(0.1 / 0.5) + 0.9 * np.log(0.9 / 0.5)
  expected = 0.5 * (5 + 1) / 2 + 2.0 * 2 * kl
  np.testing.assert_allclose(ssae.layer_loss(params, x, cfg), expected, rtol=1e-6)
  params["w1"] = jnp.ones((3, 2))
  params["w2"] = jnp.ones((2, 3))
  assert ssae.layer_loss(params, x, cfg) > ssae.layer_loss(
      params, x, ssae.SSAEConfig(sparsity=0.1, sparsity_weight=2.0, weight_decay=0.0)) + 2.9


def test_two_layers_train_sparse_features_that_separate_two_clusters():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(2, 24))
  labels = rng.integers(0, 2, 200)
  x = centres[labels] + 0.3 * rng.normal(size=(200, 24))
  model = ssae.StackedSparseAutoencoder(ssae.SSAEConfig(hidden=(16, 8), max_iter=100), seed=0)
  features = model.fit(x).transform(x)
  assert features.shape == (200, 8) and len(model.layers) == 2
  assert all(end < 0.5 * start for start, end in model.losses)
  # The sparsity penalty pulls the first layer's mean activation from 0.5 toward 0.05.
  first = np.asarray(ssae.encode(model.layers[0], model._standardise(x)))
  assert first.mean() < 0.25
  # A nearest-class-mean rule on the features recovers the clusters.
  means = np.stack([features[labels == c].mean(0) for c in (0, 1)])
  pred = np.argmin(((features[:, None] - means[None]) ** 2).sum(-1), axis=1)
  assert (pred == labels).mean() > 0.95
