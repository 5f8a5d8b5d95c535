"""How medjax starts TensorFlow, which it runs input pipelines on and nothing else.

TensorFlow reads both settings here once, when its runtime starts (the first op or dataset),
so commands call :func:`configure` before anything else touches TensorFlow.
"""
import logging

import tensorflow as tf
from tensorflow.python.eager import context

_state = {"as_written": False, "warned": False}


def configure() -> None:
  """For a medjax command, before TensorFlow starts: keeps TensorFlow off the GPUs (JAX holds
  them) and has it run input graphs as written (:func:`run_graphs_as_written`)."""
  tf.config.set_visible_devices([], "GPU")
  run_graphs_as_written()


def run_graphs_as_written() -> None:
  """Turns off Grappler's arithmetic rewrites for the graph functions tf.data runs, so that
  each op rounds as written, as it does eagerly.

  The rewrites regroup sums: ``t + mean + delta`` became ``t + AddN(mean, delta's two
  terms)``, and TensorFlow's AddN begins its sum at whichever input buffer it can reuse at
  that moment, which depends on thread timing. The same image at the same seed then came out
  one float32 step apart from run to run, and training amplified that into different models.
  ``ops.compose`` calls this, so a library user is covered where TensorFlow has not started
  yet; once it has, the setting cannot take effect, and this says so once.
  """
  if _state["as_written"]:
    return
  if not _started():
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    _state["as_written"] = True
  elif not _state["warned"]:
    _state["warned"] = True
    logging.warning(
        "TensorFlow started before medjax configured it, so input pipelines run with "
        "Grappler's arithmetic rewrites and the same seed can give images a float32 step "
        "apart from run to run; call medjax.data.tf_runtime.configure() before any "
        "TensorFlow op for reproducible runs")


def _started() -> bool:
  # TensorFlow has no public flag for this; its eager context sets it on the first op.
  return context.context()._initialized  # pylint: disable=protected-access
