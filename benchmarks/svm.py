"""Linear squared-hinge SVM training (systems 3 and 5) against liblinear.

Both sides solve the same problem: one-vs-rest (one binary classifier for two classes),
``C = 1``, bias as an intercept feature (``intercept_scaling = 1``), each at its default
tolerance (``LinearSVC`` 1e-4, medjax 1e-5: the two stopping rules measure different
things, and these end at the same objective within 1e-5 relative, which the records show),
on L2-normalised features as the pipelines feed them. Features come from
``make_classification`` with 128 informative directions and as many redundant ones, one
cluster per class: the classes overlap a little, as pooled CNN features of medical images
do, and test accuracy lands in the 80-95 % range. A fit is timed as a whole (compiled once
beforehand for medjax); both sides are scored on held-out examples.
"""
import jax
import numpy as np
from sklearn.datasets import make_classification
from sklearn.svm import LinearSVC

from benchmarks import timing
from medjax.features import svm


def features(n: int, dim: int, classes: int, seed: int = 0):
  """``(x_train, y_train, x_test, y_test)``: ``n`` training rows plus a quarter as many to test."""
  x, y = make_classification(n_samples=n + n // 4, n_features=dim, n_informative=128,
                             n_redundant=128, n_classes=classes, n_clusters_per_class=1,
                             class_sep=2.0, flip_y=0.01, random_state=seed)
  x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  y = y.astype(np.int32)
  return x[:n], y[:n], x[n:], y[n:]


def svm_case(n: int, dim: int, classes: int, repeats: int) -> list[dict]:
  x, y, x_test, y_test = features(n, dim, classes)
  x_dev, y_dev = jax.device_put(x), jax.device_put(y)

  def medjax_fit():
    return svm.fit(x_dev, y_dev, classes, C=1.0, max_iter=1000)

  def liblinear_fit():
    return LinearSVC(loss="squared_hinge", C=1.0, tol=1e-4, max_iter=1000).fit(x, y)

  def quality(who, fitted):
    if who == "medjax":
      predicted = np.asarray(svm.predict(fitted, x_test))
      params = fitted
    else:
      predicted = fitted.predict(x_test)
      w, b = fitted.coef_.T.astype(np.float32), fitted.intercept_.astype(np.float32)
      # LinearSVC keeps one binary classifier for two classes.
      params = svm.binary_params(w, b) if classes == 2 else svm.SVMParams(w=w, b=b)
    return {"accuracy": float(np.mean(predicted == y_test)),
            "objective": float(svm.objective(params, x, y, 1.0))}

  return timing.alternate_fits(f"svm/{n}x{dim}_{classes}cls", medjax_fit,
                               {"sklearn_linearsvc": liblinear_fit}, repeats=repeats,
                               quality=quality)


def cases(quick: bool) -> list[timing.Case]:
  """The chest X-ray (EfficientNet-Lite0) and ImageCLEF 2016 (CAE) training-set shapes;
  ``quick`` fits each once."""
  repeats = 1 if quick else 3
  return [timing.Case("svm/5232x1280", lambda: svm_case(5232, 1280, 2, repeats)),
          timing.Case("svm/6776x4096",
                      lambda: svm_case(6776, 4096, 30, repeats))]
