"""The JAX squared-hinge SVM against liblinear (scikit-learn's LinearSVC)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.svm import LinearSVC

from medjax.features import svm
from tests.conftest import run_on_devices



def _data(class_sep, seed=0, n_classes=5):
  x, y = make_classification(2000, 256, n_informative=64, n_redundant=0, n_classes=n_classes,
                             n_clusters_per_class=1, class_sep=class_sep, random_state=seed)
  x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  return x[:1500], y[:1500], x[1500:], y[1500:]


def _liblinear(x, y):
  clf = LinearSVC(C=1.0, loss="squared_hinge", penalty="l2", dual=False, tol=1e-5,
                  max_iter=2000).fit(x, y)
  w, b = jnp.asarray(clf.coef_.T, jnp.float32), jnp.asarray(clf.intercept_, jnp.float32)
  # Two classes: liblinear keeps one binary classifier (class 1 positive).
  return clf, svm.binary_params(w, b) if len(clf.classes_) == 2 else svm.SVMParams(w, b)


@pytest.mark.parametrize("n_classes", [5, 2], ids=["5-classes", "binary"])
@pytest.mark.parametrize("class_sep", [1.0, 3.0], ids=["overlapping", "separable-ish"])
def test_matches_linear_svc(class_sep, n_classes):
  xtr, ytr, xte, yte = _data(class_sep, n_classes=n_classes)
  clf, ref = _liblinear(xtr, ytr)
  params = svm.fit(xtr, ytr, n_classes, C=1.0)
  ours_acc = float(jnp.mean(svm.predict(params, xte) == yte))
  assert abs(ours_acc - clf.score(xte, yte)) <= 0.005
  np.testing.assert_array_equal(svm.predict(ref, xte), clf.predict(xte))
  ours_obj = float(svm.objective(params, xtr, ytr, 1.0))
  ref_obj = float(svm.objective(ref, xtr, ytr, 1.0))
  assert ours_obj <= ref_obj * (1 + 1e-3)
  expected = clf.decision_function(xte)
  if n_classes == 2:
    expected = np.stack([-expected, expected], axis=1)
  np.testing.assert_allclose(svm.decision_function(params, xte), expected, atol=0.05)


def test_two_classes_train_one_mirrored_binary_classifier():
  xtr, ytr, _, _ = _data(1.0, n_classes=2)
  state = svm.init(xtr, ytr, 2)
  assert state.weights.shape == (1, 257)
  params = svm.fit(xtr, ytr, 2)
  assert params.w.shape == (256, 2) and params.b.shape == (2,)
  np.testing.assert_array_equal(params.w[:, 0], -params.w[:, 1])
  np.testing.assert_array_equal(params.b[0], -params.b[1])
  with pytest.raises(ValueError, match="at least 2 classes"):
    svm.init(xtr, np.zeros_like(ytr), 1)


def test_objective_is_liblinear_primal():
  xtr, ytr, _, _ = _data(1.0)
  params = svm.SVMParams(w=jnp.asarray(np.random.default_rng(0).normal(size=(256, 5)), jnp.float32),
                         b=jnp.arange(5, dtype=jnp.float32))
  w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
  t = np.where(ytr[:, None] == np.arange(5), 1.0, -1.0)
  hinge = np.maximum(0.0, 1.0 - t * (xtr @ w + b))
  expected = 0.5 * (np.sum(w * w) + np.sum(b * b)) + 2.0 * np.sum(hinge ** 2)
  np.testing.assert_allclose(svm.objective(params, xtr, ytr, 2.0), expected, rtol=1e-5)


def test_binary_objective_is_liblinear_binary_primal():
  xtr, ytr, _, _ = _data(1.0, n_classes=2)
  w = np.random.default_rng(1).normal(size=256)
  params = svm.binary_params(jnp.asarray(w, jnp.float32), jnp.float32(0.5))
  t = np.where(ytr == 1, 1.0, -1.0)
  hinge = np.maximum(0.0, 1.0 - t * (xtr @ w + 0.5))
  expected = 0.5 * (np.sum(w * w) + 0.25) + 2.0 * np.sum(hinge ** 2)
  np.testing.assert_allclose(svm.objective(params, xtr, ytr, 2.0), expected, rtol=1e-5)


def test_fixed_learning_rate_reaches_same_optimum():
  xtr, ytr, _, _ = _data(1.0)
  line_search = svm.objective(svm.fit(xtr, ytr, 5), xtr, ytr, 1.0)
  fixed = svm.objective(svm.fit(xtr, ytr, 5, learning_rate=0.1, max_iter=3000), xtr, ytr, 1.0)
  np.testing.assert_allclose(fixed, line_search, rtol=1e-3)


def test_resume_from_state_equals_uninterrupted_run():
  xtr, ytr, _, _ = _data(1.0)
  config = svm.SVMConfig()
  state = svm.init(xtr, ytr, 5, config)
  whole = svm.run(state, xtr, ytr, 40, config)
  half = svm.run(state, xtr, ytr, 20, config)
  restored = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), half)  # as if checkpointed
  resumed = svm.run(restored, xtr, ytr, 20, config)
  assert int(resumed.iteration) == int(whole.iteration) == 40
  np.testing.assert_allclose(resumed.weights, whole.weights, rtol=1e-4, atol=1e-5)
  assert not bool(svm.converged(resumed, config))


@pytest.mark.slow
def test_sharded_examples_match_unsharded():
  script = """
      import jax, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from medjax.features import svm
      rng = np.random.default_rng(0)
      x = rng.normal(size=(400, 32)).astype(np.float32)
      y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)
      data = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
      ref = svm.fit(x, y, 3)
      got = svm.fit(jax.device_put(x, data), jax.device_put(y, data), 3)
      np.testing.assert_allclose(got.w, ref.w, rtol=1e-3, atol=1e-4)
      assert len(svm.predict(got, jax.device_put(x, data)).sharding.device_set) == 2
      print("ok")
  """
  run_on_devices(script)


def test_multi_hot_labels_train_one_binary_svm_per_label():
  """Each label's column is the binary SVM of that label alone (and liblinear's), also for
  two labels, which single-label data would fold into one mirrored classifier."""
  x, y = make_classification(n_samples=300, n_features=12, n_informative=6, n_classes=3,
                             random_state=0)
  rng = np.random.default_rng(0)
  multi = np.stack([y == 0, (y == 1) | (rng.random(300) < 0.3)], 1).astype(np.float32)
  params = svm.fit(jnp.asarray(x, jnp.float32), jnp.asarray(multi), 2, tol=1e-7)
  for j in range(2):
    alone = svm.fit(jnp.asarray(x, jnp.float32), jnp.asarray(multi[:, j].astype(int)), 2,
                    tol=1e-7)
    np.testing.assert_allclose(params.w[:, j], alone.w[:, 1], atol=2e-4)
    np.testing.assert_allclose(params.b[j], alone.b[1], atol=2e-4)
    ref = LinearSVC(C=1.0, loss="squared_hinge", tol=1e-8, max_iter=100000).fit(x, multi[:, j])
    np.testing.assert_allclose(params.w[:, j], ref.coef_[0], atol=2e-3)
