"""The graph form of CLAHE (what a SavedModel holds) gives scikit-image's output, which the
``clahe`` op computes in Python. Tolerance: 1e-6 (float32 round-off; the port follows
scikit-image's integer steps and its float32 accumulation, so it is exact in practice)."""
import numpy as np
import pytest
import tensorflow as tf
from skimage import exposure

from medjax.data import clahe, ops

TOLERANCE = 1e-6


def _images():
  rng = np.random.default_rng(0)
  smooth = np.add.outer(np.linspace(0, 0.5, 48), np.linspace(0, 0.4, 40)).astype(np.float32)
  return [rng.random((32, 32), np.float32), smooth + 0.05 * rng.random((48, 40), np.float32),
          np.full((24, 24), 0.5, np.float32)]


@pytest.mark.parametrize("kwargs", [{}, {"clip_limit": 0.03}, {"kernel_size": 8, "nbins": 128}])
def test_graph_clahe_equals_scikit_image(kwargs):
  for image in _images():
    want = exposure.equalize_adapthist(image, **kwargs)
    got = clahe.equalize_adapthist(tf.constant(image), **kwargs).numpy()
    assert np.abs(got - want).max() <= TOLERANCE, (image.shape, kwargs)


def test_graph_only_compose_uses_no_python_and_matches_the_op():
  rng = np.random.default_rng(1)
  image = tf.constant(rng.random((24, 20, 2), np.float32))
  pp = "clahe(clip_limit=0.02)"
  zero = tf.zeros([2], tf.int64)
  want = ops.compose(pp)({"image": image}, zero)["image"].numpy()
  graph_fn = tf.function(lambda x: ops.compose(pp, graph_only=True)({"image": x}, zero)["image"])
  got = graph_fn(image).numpy()
  assert np.abs(got - want).max() <= TOLERANCE
  graph = graph_fn.get_concrete_function(image).graph.as_graph_def()
  kinds = {node.op for node in graph.node} | {
      node.op for f in graph.library.function for node in f.node_def}
  assert not kinds & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}


def test_graph_clahe_needs_a_fixed_size():
  fn = tf.function(clahe.equalize_adapthist,
                   input_signature=[tf.TensorSpec([None, None], tf.float32)])
  with pytest.raises(ValueError, match="fixed image size"):
    fn.get_concrete_function()
