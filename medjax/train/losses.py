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


class WeightedSigmoid:
  """One-vs-all cross-entropy with label smoothing (targets pulled toward 1/2) and per-label
  weights ``n / (2 n_pos)`` on positives, ``n / (2 n_neg)`` on negatives.

  A rare finding (a label positive in 2 % of images) is otherwise learnt as "never": the
  weights give its positives as much say as its negatives, as CheXNet's weighted loss does
  (Rajpurkar et al. 2017), scaled as :class:`WeightedSoftmax`'s so a balanced label keeps 1.
  """
  name = "sigmoid_xent"

  def __init__(self, label_smoothing: float = 0.0, positives=None, num_examples: int = 0):
    self.label_smoothing = float(label_smoothing)
    self.weights = None
    if positives is not None:
      pos = np.asarray(positives, np.float64)
      neg = num_examples - pos
      self.weights = (tuple(num_examples / (2 * np.maximum(pos, 1))),
                      tuple(num_examples / (2 * np.maximum(neg, 1))))

  def __call__(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
    targets = targets_for(self.name, labels, logits.shape[-1])
    smoothed = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
    loss = optax.sigmoid_binary_cross_entropy(logits, smoothed.astype(logits.dtype))
    if self.weights is not None:
      pos, neg = (jnp.asarray(w, loss.dtype) for w in self.weights)
      loss = loss * jnp.where(targets > 0.5, pos, neg)
    return loss.sum(-1)


def resolve(name: str, multi_label: bool) -> str:
  """``config.loss`` for the data: ``"auto"`` is one-vs-all sigmoids for multi-label data,
  softmax otherwise, so one config serves a researcher's single- and multi-label studies."""
  if name == "auto":
    return "sigmoid_xent" if multi_label else "softmax_xent"
  return name


def make(config, class_counts=None, num_examples: int | None = None):
  """``config.loss`` as the step's loss: its name, or a weighted loss when
  ``config.label_smoothing`` or ``config.class_balance == "loss"`` ask for more.

  ``class_counts``: training examples per class, or for multi-label data positives per
  label (then with ``num_examples``).
  """
  smoothing = config.get("label_smoothing", 0.0)
  balance = config.get("class_balance", "")
  if not (smoothing or balance == "loss"):
    return config.loss
  counts = None if class_counts is None else np.asarray(class_counts, np.float64)
  if config.loss == "sigmoid_xent":
    n = int(num_examples if num_examples is not None else counts.sum())
    return WeightedSigmoid(smoothing, counts if balance == "loss" else None, n)
  weights = None
  if balance == "loss":
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
  return WeightedSoftmax(smoothing, weights)


def constant_predictor_loss(loss, class_counts, num_examples: int | None = None) -> float:
  """The training loss of the best prediction that ignores the image: the entropy of the
  class prior (plain cross-entropy), log K under class weights (the weights make the
  prior uniform), raised by label smoothing's floor; for one-vs-all sigmoids the sum of
  each label's binary entropy (log 2 each under weights). A run at this loss has learnt
  nothing."""
  counts = np.asarray(class_counts, np.float64)
  k = len(counts)
  if getattr(loss, "name", loss) == "sigmoid_xent":
    p = counts / (num_examples if num_examples is not None else counts.sum())
    if isinstance(loss, WeightedSigmoid):
      if loss.weights is not None:
        return float(k * np.log(2))
      p = p * (1 - loss.label_smoothing) + loss.label_smoothing / 2
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).sum())
  prior = counts / counts.sum()
  if isinstance(loss, WeightedSoftmax):
    if loss.class_weights is not None:
      prior = np.full(k, 1.0 / k)
    eps = loss.label_smoothing
    prior = prior * (1 - eps) + eps / k
  prior = prior[prior > 0]
  return float(-(prior * np.log(prior)).sum())
