"""The graph form of CLAHE (what a SavedModel holds, and what the ``clahe`` op runs on
images of a known size, compiled by XLA) gives scikit-image's output, which the op computes
in Python on images of unknown size. Tolerance: 1e-6 (float32 round-off; the port follows
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


@pytest.mark.parametrize("kwargs, jit_compile", [
    ({}, False), pytest.param({}, True, marks=pytest.mark.slow),
    pytest.param({"clip_limit": 0.03}, True, marks=pytest.mark.slow),
    ({"kernel_size": 8, "nbins": 128}, True),
    pytest.param({"clip_limit": 0.03}, False, marks=pytest.mark.slow),
    pytest.param({"kernel_size": 8, "nbins": 128}, False, marks=pytest.mark.slow)])
def test_graph_clahe_equals_scikit_image(kwargs, jit_compile):
  fn = tf.function(lambda x: clahe.equalize_adapthist(x, **kwargs), jit_compile=jit_compile)
  for image in _images():
    want = exposure.equalize_adapthist(image, **kwargs)
    got = fn(tf.constant(image)).numpy()
    assert np.abs(got - want).max() <= TOLERANCE, (image.shape, kwargs)


def test_xla_compiles_clahe_once_per_shape():
  """Nothing in the program may depend on pixel values (a bincount sized from the data
  made XLA bake the values in and compile anew for every image)."""
  fn = tf.function(lambda x: clahe.equalize_adapthist(x), jit_compile=True)
  rng = np.random.default_rng(3)
  programs = {fn.experimental_get_compiler_ir(tf.constant(image))(stage="hlo")
              for image in (np.zeros((32, 32), np.float32), rng.random((32, 32), np.float32),
                            rng.random((32, 32), np.float32) ** 4)}
  assert len(programs) == 1


def _nodes(concrete) -> list:
  graph = concrete.graph.as_graph_def()
  return list(graph.node) + [node for f in graph.library.function for node in f.node_def]


def _op_kinds(concrete) -> set:
  return {node.op for node in _nodes(concrete)}


def _xla_compiled(concrete) -> bool:
  return any(node.attr["_XlaMustCompile"].b for node in _nodes(concrete)
             if "_XlaMustCompile" in node.attr)


PYTHON_OPS = {"PyFunc", "EagerPyFunc", "PyFuncStateless"}


@pytest.mark.parametrize("graph_only", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_static_size_compose_uses_no_python_and_matches_scikit_image(graph_only):
  """A size known when the pipeline is built takes the graph ops in the default op too
  (compiled by XLA, mapped by tf.data without the GIL); ``graph_only`` always does."""
  rng = np.random.default_rng(1)
  image = tf.constant(rng.random((24, 20, 2), np.float32))
  want = np.stack([exposure.equalize_adapthist(image.numpy()[..., c], clip_limit=0.02)
                   for c in range(2)], -1)
  zero = tf.zeros([2], tf.int64)
  pp = "clahe(clip_limit=0.02)"
  fn = tf.function(lambda x: ops.compose(pp, graph_only=graph_only)({"image": x}, zero)["image"])
  assert np.abs(fn(image).numpy() - want).max() <= TOLERANCE
  concrete = fn.get_concrete_function(image)
  assert not _op_kinds(concrete) & PYTHON_OPS
  # The input pipeline's form is compiled by XLA; a SavedModel's stays plain graph ops,
  # which any TensorFlow runtime serves.
  assert _xla_compiled(concrete) == (not graph_only)


def test_unknown_size_runs_scikit_image_itself():
  rng = np.random.default_rng(2)
  image = rng.random((30, 26, 1), np.float32)
  zero = tf.zeros([2], tf.int64)
  fn = tf.function(lambda x: ops.compose("clahe")({"image": x}, zero)["image"],
                   input_signature=[tf.TensorSpec([None, None, 1], tf.float32)])
  assert _op_kinds(fn.get_concrete_function()) & PYTHON_OPS
  want = exposure.equalize_adapthist(image[..., 0])[..., None]
  np.testing.assert_allclose(fn(tf.constant(image)).numpy(), want, atol=TOLERANCE)


def test_graph_clahe_needs_a_fixed_size():
  fn = tf.function(clahe.equalize_adapthist,
                   input_signature=[tf.TensorSpec([None, None], tf.float32)])
  with pytest.raises(ValueError, match="fixed image size"):
    fn.get_concrete_function()
