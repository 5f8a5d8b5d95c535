"""Stacked sparse auto-encoder: system 3's SSAE baseline (Ahn et al., Table 2, 2 layers, 65.17 %).

The paper names the baseline (after Shin et al. 2013) and nothing else, so this is the
textbook one (Ng's UFLDL notes): each layer is ``h = sigmoid(x W1 + b1)`` with a linear
decoder ``y = h W2 + b2``, trained on the full batch by L-BFGS on

  ``0.5 / m * sum ||y - x||^2 + weight_decay / 2 * (|W1|^2 + |W2|^2)
  + sparsity_weight * sum_j KL(sparsity || mean activation of unit j)``,

weights uniform in +-sqrt(6 / (n_in + n_out + 1)), biases zero. Layers are trained
greedily: the second on the first's activations; the second's activations are the
features. Its input is the same pooled, L2-normalised backbone features the sparse coding
and ICA baselines get, standardised per dimension with the training statistics first:
unit-norm vectors of 256-1280 dimensions have entries near 1/sqrt(D), and weight decay on
weights large enough to read them would swamp the reconstruction term.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class SSAEConfig:
  """Hyper-parameters (UFLDL's defaults for sparsity and weight decay); hashable for jit."""
  hidden: tuple[int, ...] = (512, 256)
  sparsity: float = 0.05          # target mean activation rho
  sparsity_weight: float = 3.0    # beta
  weight_decay: float = 3e-3      # lambda
  max_iter: int = 400             # L-BFGS iterations per layer


def init_layer(key: jax.Array, n_in: int, n_out: int) -> dict:
  r = (6.0 / (n_in + n_out + 1)) ** 0.5
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.uniform(k1, (n_in, n_out), jnp.float32, -r, r),
          "b1": jnp.zeros((n_out,), jnp.float32),
          "w2": jax.random.uniform(k2, (n_out, n_in), jnp.float32, -r, r),
          "b2": jnp.zeros((n_in,), jnp.float32)}


def encode(params: dict, x: jax.Array) -> jax.Array:
  return jax.nn.sigmoid(x @ params["w1"] + params["b1"])


def layer_loss(params: dict, x: jax.Array, cfg: SSAEConfig) -> jax.Array:
  """The sparse auto-encoder objective of one layer on the batch ``x`` ``(m, n_in)``."""
  h = encode(params, x)
  y = h @ params["w2"] + params["b2"]
  reconstruction = 0.5 * jnp.sum((y - x) ** 2) / x.shape[0]
  decay = 0.5 * cfg.weight_decay * (jnp.sum(params["w1"] ** 2) + jnp.sum(params["w2"] ** 2))
  rho, rho_hat = cfg.sparsity, jnp.clip(jnp.mean(h, axis=0), 1e-6, 1 - 1e-6)
  kl = jnp.sum(rho * jnp.log(rho / rho_hat) + (1 - rho) * jnp.log((1 - rho) / (1 - rho_hat)))
  return reconstruction + decay + cfg.sparsity_weight * kl


@functools.partial(jax.jit, static_argnames=("n_out", "cfg"))
def fit_layer(key: jax.Array, x: jax.Array, n_out: int, cfg: SSAEConfig):
  """``cfg.max_iter`` L-BFGS iterations (zoom line search) from the initialisation;
  returns ``(params, loss at the start, loss at the end)``."""
  fun = functools.partial(layer_loss, x=x, cfg=cfg)
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(_, carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(params, updates), state

  params = init_layer(key, x.shape[1], n_out)
  start = fun(params)
  params, _ = jax.lax.fori_loop(0, cfg.max_iter, step, (params, solver.init(params)))
  return params, start, fun(params)


class StackedSparseAutoencoder:
  """``fit(x)`` / ``transform(x)`` like the scikit-learn baselines; ``losses`` holds each
  layer's objective before and after training."""

  def __init__(self, cfg: SSAEConfig = SSAEConfig(), seed: int = 0):
    self.cfg, self.seed = cfg, seed
    self.layers, self.losses = [], []

  def _standardise(self, x) -> jax.Array:
    return (jnp.asarray(x, jnp.float32) - self.mean) / self.std

  def fit(self, x) -> "StackedSparseAutoencoder":
    x = jnp.asarray(x, jnp.float32)
    self.mean, self.std = jnp.mean(x, axis=0), jnp.std(x, axis=0) + 1e-6
    h = self._standardise(x)
    keys = jax.random.split(jax.random.key(self.seed), len(self.cfg.hidden))
    for key, n_out in zip(keys, self.cfg.hidden):
      params, start, end = fit_layer(key, h, n_out, self.cfg)
      self.layers.append(params)
      self.losses.append((float(start), float(end)))
      h = encode(params, h)
    return self

  def transform(self, x) -> np.ndarray:
    h = self._standardise(x)
    for params in self.layers:
      h = encode(params, h)
    return np.asarray(h)


def from_config(cfg, seed: int = 0) -> StackedSparseAutoencoder:
  """From the frozen-feature config's ``ssae`` fields (``configs/cae_imageclef16.py``)."""
  return StackedSparseAutoencoder(SSAEConfig(
      hidden=tuple(cfg.hidden), sparsity=cfg.sparsity, sparsity_weight=cfg.sparsity_weight,
      weight_decay=cfg.weight_decay, max_iter=cfg.max_iter), seed=seed)
