"""From scores to probabilities: softmax, sigmoid and temperature scaling.

Temperature scaling (Guo et al., 2017) divides a classifier's scores by one fitted
``T > 0`` before the softmax: it makes decision values (an SVM's margins) into
probabilities by minimising the log loss on held-out scores, and leaves every argmax,
hence every prediction and accuracy, unchanged.
"""
import numpy as np
from scipy import optimize, special


def softmax(scores: np.ndarray) -> np.ndarray:
  return special.softmax(np.asarray(scores, np.float64), axis=-1)


def sigmoid(scores: np.ndarray) -> np.ndarray:
  return special.expit(np.asarray(scores, np.float64))


def _nll(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
  logp = special.log_softmax(scores / temperature, axis=-1)
  return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
  """The ``T`` minimising the log loss of ``softmax(scores / T)`` on held-out ``scores``."""
  scores = np.asarray(scores, np.float64)
  result = optimize.minimize_scalar(lambda log_t: _nll(scores, labels, np.exp(log_t)),
                                    bounds=(-7.0, 7.0), method="bounded",
                                    options={"xatol": 1e-6})
  return float(np.exp(result.x))
