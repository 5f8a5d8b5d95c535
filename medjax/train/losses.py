"""Training losses by name; ``labels`` are class indices or multi-hot vectors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax


def targets_for(loss: str, labels: jax.Array, num_classes: int) -> jax.Array:
  """Multi-hot targets for one-vs-all losses (single-label data becomes one-hot)."""
  if loss == "sigmoid_xent" and labels.ndim == 1:
    return jax.nn.one_hot(labels, num_classes)
  return labels


def loss_fn(loss, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example loss; one-vs-all losses are summed over labels, so each binary head gets
  the gradient it would get if trained on its own. ``loss`` may also be a callable
  (see :func:`make`)."""
  if callable(loss):
    return loss(logits, labels)
  if loss == "softmax_xent":
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if loss == "sigmoid_xent":
    targets = targets_for(loss, labels, logits.shape[-1])
    return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
  raise ValueError(f"config.loss={loss!r}; expected 'softmax_xent' or 'sigmoid_xent'")


def batch_accuracy(loss: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Top-1 accuracy (single-label) or per-slot accuracy (one-vs-all), for progress logs."""
  loss = getattr(loss, "name", loss)
  if loss == "sigmoid_xent":
    targets = targets_for(loss, labels, logits.shape[-1])
    return jnp.mean((logits > 0) == (targets > 0.5))
  return jnp.mean(jnp.argmax(logits, -1) == labels)


class WeightedSoftmax:
  """Softmax cross-entropy with label smoothing and per-class weights, as a loss that the
  step takes in place of a name (``loss_fn`` calls it).

  Class weights ``n / (K * n_c)`` make every class count as much as the others in the mean,
  so a minority class (Kermany's NORMAL, 26 %) is not traded away for the majority.
  """
  name = "softmax_xent"

  def __init__(self, label_smoothing: float = 0.0, class_weights=None):
    self.label_smoothing = float(label_smoothing)
    self.class_weights = None if class_weights is None else tuple(map(float, class_weights))

  def __call__(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
    k = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, k), self.label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets)
    if self.class_weights is not None:
      loss = loss * jnp.asarray(self.class_weights, loss.dtype)[labels]
    return loss


def make(config, class_counts=None):
  """``config.loss`` as the step's loss: its name, or a :class:`WeightedSoftmax` when
  ``config.label_smoothing`` or ``config.class_balance == "loss"`` ask for more."""
  smoothing = config.get("label_smoothing", 0.0)
  balance = config.get("class_balance", "")
  if config.loss != "softmax_xent" or not (smoothing or balance == "loss"):
    return config.loss
  weights = None
  if balance == "loss":
    counts = np.asarray(class_counts, np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
  return WeightedSoftmax(smoothing, weights)


def constant_predictor_loss(loss, class_counts) -> float:
  """The training loss of the best prediction that ignores the image: the entropy of the
  class prior (plain cross-entropy), log K under class weights (the weights make the
  prior uniform), raised by label smoothing's floor. A run at this loss has learnt nothing."""
  counts = np.asarray(class_counts, np.float64)
  k = len(counts)
  prior = counts / counts.sum()
  if isinstance(loss, WeightedSoftmax):
    if loss.class_weights is not None:
      prior = np.full(k, 1.0 / k)
    eps = loss.label_smoothing
    prior = prior * (1 - eps) + eps / k
  prior = prior[prior > 0]
  return float(-(prior * np.log(prior)).sum())
