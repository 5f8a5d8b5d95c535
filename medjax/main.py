"""Entry point for every system: ``python -m medjax.main --config=configs/NAME.py[:ARGS] --workdir=DIR``.

Thin by design: flags, config, multi-process init, then dispatch on ``config.pipeline`` to
the one trainer that runs it.
"""
import importlib
import logging as py_logging

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/irma_cnn.py:smoke.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and results.json go.")
flags.mark_flags_as_required(["config", "workdir"])

# config.pipeline -> the module whose train_and_evaluate(config, workdir) runs it.
PIPELINES = {
    "supervised": "medjax.train.trainer",
}


def run(config, workdir: str) -> dict:
  if config.pipeline not in PIPELINES:
    raise ValueError(f"config.pipeline={config.pipeline!r}; expected one of {sorted(PIPELINES)}")
  module = importlib.import_module(PIPELINES[config.pipeline])
  return module.train_and_evaluate(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Keep TensorFlow to the input pipeline: it must not grab accelerators JAX will use.
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  py_logging.getLogger("absl").setLevel(py_logging.INFO)
  logging.set_verbosity(logging.INFO)
  results = run(FLAGS.config, FLAGS.workdir)
  summary = {k: v for k, v in results.items() if k.endswith(("accuracy", "exact_match", "any_match",
                                                             "hamming_similarity", "mAP", "loss"))}
  logging.info("Results: %s", summary)
  print("\n".join(f"{k}\t{v:.4f}" for k, v in sorted(summary.items())))


if __name__ == "__main__":
  app.run(main)
