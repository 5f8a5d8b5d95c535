"""Entry point for every system: ``python -m medjax.main --config=configs/NAME.py[:ARGS] --workdir=DIR``.

Thin by design: flags, config, multi-process init, then dispatch on ``config.pipeline`` to
the one trainer that runs it.
"""
import importlib
import logging as py_logging
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from medjax import distributed
from medjax.eval import writers

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/irma_cnn.py:smoke.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and results.json go.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process runs (see medjax/distributed.py); unset flags fall back to $MEDJAX_*.
flags.DEFINE_enum("distributed", os.environ.get("MEDJAX_DISTRIBUTED", "auto"),
                  list(distributed.MODES),
                  "auto: join jax.distributed when settings or a cluster launcher are found; "
                  "on: always (Cloud TPU VMs); off: single process.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")

# config.pipeline -> the module whose train_and_evaluate(config, workdir) runs it.
PIPELINES = {
    "supervised": "medjax.train.trainer",
    "frozen_features": "medjax.features.pipeline",
}


class _QuietLibraries(py_logging.Filter):
  """Keeps the console to progress: INFO lines only from medjax and clu's progress report;
  warnings and errors from everywhere."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or any(
        part in record.pathname for part in ("/medjax/", "/clu/"))


def run(config, workdir: str) -> dict:
  if config.pipeline not in PIPELINES:
    raise ValueError(f"config.pipeline={config.pipeline!r}; expected one of {sorted(PIPELINES)}")
  module = importlib.import_module(PIPELINES[config.pipeline])
  return module.train_and_evaluate(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  distributed.initialize(FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                         num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  # Keep TensorFlow to the input pipeline: it must not grab accelerators JAX will use.
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  # Every process runs the same program; process 0 alone speaks (the others only warn).
  level = py_logging.INFO if jax.process_index() == 0 else py_logging.WARNING
  py_logging.getLogger("absl").setLevel(level)
  logging.set_verbosity(level)
  results = run(FLAGS.config, FLAGS.workdir)
  if jax.process_index() == 0:
    summary = writers.headline(results)
    logging.info("Results: %s", summary)
    print("\n".join(f"{k}\t{v:.4f}" for k, v in sorted(summary.items())))


if __name__ == "__main__":
  app.run(main)
