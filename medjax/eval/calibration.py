"""From scores to probabilities: softmax, sigmoid and temperature scaling.

Temperature scaling (Guo et al., 2017) divides a classifier's scores by one fitted
``T > 0`` before the softmax: it makes decision values (an SVM's margins) into
probabilities by minimising the log loss on held-out scores, and leaves every argmax,
hence every prediction and accuracy, unchanged. The fit uses Platt's (1999) smoothed
targets, which keep ``T`` finite on held-out scores that separate the classes.
"""
import numpy as np
from scipy import optimize, special


def softmax(scores: np.ndarray) -> np.ndarray:
  return special.softmax(np.asarray(scores, np.float64), axis=-1)


def sigmoid(scores: np.ndarray) -> np.ndarray:
  return special.expit(np.asarray(scores, np.float64))


def platt_targets(labels: np.ndarray, k: int) -> np.ndarray:
  """Soft targets: ``(n_c + 1) / (n_c + 2)`` on an example's class ``c`` (``n_c`` its count),
  the rest shared by the others (Platt, 1999). Held-out scores that separate the classes
  perfectly, as a few dozen often do, would otherwise drive ``T`` to 0 and every
  probability to exactly 0 or 1, ties that erase the ranking AUC and ROC curves read."""
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=k).astype(np.float64)
  true = ((counts + 1) / (counts + 2))[labels]
  targets = np.repeat(((1 - true) / max(k - 1, 1))[:, None], k, axis=1)
  targets[np.arange(len(labels)), labels] = true
  return targets


def _nll(scores: np.ndarray, targets: np.ndarray, temperature: float) -> float:
  logp = special.log_softmax(scores / temperature, axis=-1)
  return float(-(targets * logp).sum(-1).mean())


def fit_label_temperatures(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """One ``T`` per label for ``sigmoid(scores / T)`` of one-vs-all margins ``(N, K)`` and
  multi-hot ``targets``: each label's binary log loss against Platt's targets, minimised;
  the threshold 0 (probability 1/2) and so every predicted label set is unchanged."""
  scores, targets = np.asarray(scores, np.float64), np.asarray(targets, np.float64)
  out = np.ones(scores.shape[1])
  for j in range(scores.shape[1]):
    s, y = scores[:, j], targets[:, j]
    positives = y.sum()
    t = np.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (len(y) - positives + 2))

    def nll(log_t, s=s, t=t):
      z = s / np.exp(log_t)
      return float((np.logaddexp(0, -z) * t + np.logaddexp(0, z) * (1 - t)).mean())
    out[j] = _fit_log_t(nll)
  return out


def _fit_log_t(nll) -> float:
  """``exp`` of the log-temperature in [-7, 7] minimising ``nll(log_t)``."""
  return float(np.exp(optimize.minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded",
                                               options={"xatol": 1e-6}).x))


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
  """The ``T`` minimising the log loss of ``softmax(scores / T)`` on held-out ``scores``
  against :func:`platt_targets` of their ``labels``."""
  scores = np.asarray(scores, np.float64)
  targets = platt_targets(labels, scores.shape[-1])
  return _fit_log_t(lambda log_t: _nll(scores, targets, np.exp(log_t)))
