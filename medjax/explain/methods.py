"""Saliency maps of a finished run's prediction: where in the image did it look?

Every method takes a :class:`medjax.inference.Run` (either pipeline), one preprocessed
image ``(H, W, C)`` and a class index, and returns a non-negative ``(H, W)`` map at the
network's input resolution:

Gradients are taken of the class logit (pre-softmax), as in the papers: a confident
softmax saturates and its gradient vanishes.

* ``gradcam`` (Selvaraju et al. 2017): the layer's activations weighted by the spatial
  mean of the class logit's gradient, ReLU. The layer is a Flax submodule path
  (``conv3``, ``stage6/Conv_0``; :func:`layers` lists them); its output is intercepted
  with ``flax.linen.intercept_methods``, so every medjax model (and the frozen backbone
  under an SVM) works without changes. Default: the last module with a spatial output.
* ``occlusion`` (Zeiler & Fergus 2014; Kermany et al. 2018's maps): the drop in the class
  logit when a square patch is replaced by the image's mean, averaged over the patches
  covering each pixel; needs only the forward pass, so it works for every pipeline.
* ``integrated_gradients`` (Sundararajan et al. 2017): ``(x - x0)`` times the mean
  gradient along the straight path from a black baseline, summed over channels (absolute).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("gradcam", "occlusion", "integrated_gradients")


def _path(context) -> str:
  return "/".join(context.module.path)


def layers(run, image: np.ndarray) -> list[str]:
  """Submodule paths whose output is a spatial map ``(B, h, w, c)``, in call order."""
  found = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if (context.method_name == "__call__" and isinstance(out, jax.Array) and out.ndim == 4
        and _path(context) and _path(context) not in found):
      found.append(_path(context))
    return out

  # A fresh function: a traced one is cached by identity and would skip the interceptor.
  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v, x: run.logits(v, x), run.variables, jnp.asarray(image)[None])
  return found


# Compiled programs per (model function, method, layer): variables, image and class are
# arguments, so explaining a folder compiles once, not once per image.
@functools.lru_cache(maxsize=32)
def _gradcam_program(logits, layer: str):
  def score(delta, variables, image, target):
    box = {}

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and _path(context) == layer and "a" not in box:
        box["a"] = out
        return out + delta
      return out

    with nn.intercept_methods(interceptor):
      s = logits(variables, image[None])[0, target]
    return s, box["a"]

  def program(variables, image, target):
    # The layer's output shape, for the zero perturbation whose gradient is the layer's.
    shape = jax.eval_shape(score, jnp.zeros(()), variables, image, target)[1].shape
    grads, activations = jax.grad(score, has_aux=True)(jnp.zeros(shape), variables, image, target)
    weights = grads[0].mean(axis=(0, 1))
    cam = jax.nn.relu((activations[0] * weights).sum(-1))
    return jax.image.resize(cam, image.shape[:2], "bilinear")
  return jax.jit(program)


def gradcam(run, image: np.ndarray, target: int, layer: str | None = None) -> np.ndarray:
  known = layers(run, image)
  layer = layer or known[-1]
  if layer not in known:
    raise KeyError(f"layer {layer!r} has no spatial output in this model; known: {known}")
  return np.asarray(_gradcam_program(run.logits, layer)(run.variables, jnp.asarray(image), target))


@functools.lru_cache(maxsize=32)
def _logits_program(logits):
  return jax.jit(lambda v, x: logits(v, x))


def occlusion(run, image: np.ndarray, target: int, patch: int | None = None,
              stride: int | None = None, batch_size: int = 32) -> np.ndarray:
  h, w = image.shape[:2]
  patch = patch or max(1, min(h, w) // 8)
  stride = stride or max(1, patch // 2)
  fill = image.mean(axis=(0, 1))
  corners = [(y, x) for y in range(0, max(h - patch, 0) + 1, stride)
             for x in range(0, max(w - patch, 0) + 1, stride)]
  scores = _logits_program(run.logits)
  base = float(scores(run.variables, jnp.asarray(image)[None])[0, target])
  drops = []
  for i in range(0, len(corners), batch_size):
    chunk = corners[i:i + batch_size]
    batch = np.repeat(image[None], batch_size, 0)
    for j, (y, x) in enumerate(chunk):
      batch[j, y:y + patch, x:x + patch] = fill
    drops.extend(base - np.asarray(scores(run.variables, batch))[:len(chunk), target])
  total, count = np.zeros((h, w)), np.zeros((h, w))
  for (y, x), d in zip(corners, drops):
    total[y:y + patch, x:x + patch] += d
    count[y:y + patch, x:x + patch] += 1
  return np.maximum(total / np.maximum(count, 1), 0.0)


@functools.lru_cache(maxsize=32)
def _integrated_gradients_program(logits, steps: int):
  def program(variables, x, target):
    baseline = jnp.zeros_like(x)
    alphas = (jnp.arange(steps) + 0.5) / steps  # Midpoint rule.
    path = baseline[None] + alphas[:, None, None, None] * (x - baseline)[None]
    grad = jax.grad(lambda p: logits(variables, p)[:, target].sum())(path)
    return jnp.abs((x - baseline) * grad.mean(0)).sum(-1)
  return jax.jit(program)


def integrated_gradients(run, image: np.ndarray, target: int, steps: int = 32) -> np.ndarray:
  program = _integrated_gradients_program(run.logits, steps)
  return np.asarray(program(run.variables, jnp.asarray(image), target))


def explain(run, image: np.ndarray, target: int, method: str, layer: str | None = None):
  if method == "gradcam":
    return gradcam(run, image, target, layer)
  if method == "occlusion":
    return occlusion(run, image, target)
  if method == "integrated_gradients":
    return integrated_gradients(run, image, target)
  raise ValueError(f"method {method!r}; expected one of {METHODS}")
