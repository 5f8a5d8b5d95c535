"""Training losses by name; ``labels`` are class indices or multi-hot vectors."""
import jax
import jax.numpy as jnp
import optax


def targets_for(loss: str, labels: jax.Array, num_classes: int) -> jax.Array:
  """Multi-hot targets for one-vs-all losses (single-label data becomes one-hot)."""
  if loss == "sigmoid_xent" and labels.ndim == 1:
    return jax.nn.one_hot(labels, num_classes)
  return labels


def loss_fn(loss: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example loss; one-vs-all losses are summed over labels, so each binary head gets
  the gradient it would get if trained on its own."""
  if loss == "softmax_xent":
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if loss == "sigmoid_xent":
    targets = targets_for(loss, labels, logits.shape[-1])
    return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
  raise ValueError(f"config.loss={loss!r}; expected 'softmax_xent' or 'sigmoid_xent'")


def batch_accuracy(loss: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Top-1 accuracy (single-label) or per-slot accuracy (one-vs-all), for progress logs."""
  if loss == "sigmoid_xent":
    targets = targets_for(loss, labels, logits.shape[-1])
    return jnp.mean((logits > 0) == (targets > 0.5))
  return jnp.mean(jnp.argmax(logits, -1) == labels)
