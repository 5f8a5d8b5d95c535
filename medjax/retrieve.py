"""Query the retrieval index of a finished run.

  python -m medjax.retrieve --workdir=DIR --query=IMAGE [--query=IMAGE2 ...] --k=10
  python -m medjax.retrieve --workdir=DIR --split=test     # mAP, P@k and the PR curve

The image goes through the run's own evaluation preprocessing (``config.pp_eval``, with
the stored training mean image where used) and model; its ``pre_logits`` embedding is
compared with the training-split index saved by the run (``retrieval/index.npz``).
Prints, per query, ``rank<TAB>id<TAB>label<TAB>distance`` for the k nearest.
"""
import json
from pathlib import Path

from absl import flags

from medjax import cli

import numpy as np  # noqa: I001 -- after cli, which quiets TensorFlow's start-up logging.
import tensorflow as tf

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "Workdir of a finished supervised run.", required=True,
                      flag_values=fv)
  flags.DEFINE_multi_string("query", [], "Image file(s) to query with.", flag_values=fv)
  flags.DEFINE_string("split", None, "Query with a whole split instead (e.g. test).",
                      flag_values=fv)
  flags.DEFINE_integer("k", 10, "Number of neighbours to print.", flag_values=fv)


def embed_files(paths, config, model, variables, data) -> np.ndarray:
  fn = data.preprocess_fn(config.pp_eval)
  images = []
  for path in paths:
    path = Path(path)
    if not path.is_file():
      raise cli.UserError(f"query image {path} does not exist")
    example = {"image": tf.constant(path.read_bytes())}
    try:
      images.append(fn(example, tf.zeros([2], tf.int64))["image"].numpy())
    except tf.errors.InvalidArgumentError as e:
      raise cli.UserError(f"query image {path} could not be decoded: {e.message}") from None
  _, features = model.apply(variables, np.stack(images), train=False)
  return np.asarray(features["pre_logits"]).reshape(len(images), -1)


def main(argv):
  del argv
  tf.config.set_visible_devices([], "GPU")
  from medjax.eval import retrieval
  from medjax.train import step, trainer
  workdir = Path(FLAGS.workdir)
  index_path = workdir / "retrieval" / "index.npz"
  if not index_path.exists():
    raise cli.UserError(f"{index_path} not found: run training with config.retrieval=True")
  if not FLAGS.query and not FLAGS.split:
    raise cli.UserError("give --query=IMAGE (repeatable) or --split=NAME")
  index = retrieval.Index.load(index_path)
  config, model, variables, data = trainer.restore_for_inference(workdir)
  names = data.info.class_names

  def label_name(label):
    label = np.asarray(label)
    return names[int(label)] if label.ndim == 0 else ",".join(
        n for n, on in zip(names, label) if on) or "none"

  if FLAGS.query:
    embeddings = embed_files(FLAGS.query, config, model, variables, data)
    order, dist = retrieval.nearest(embeddings, index, FLAGS.k)
    for path, rows, ds in zip(FLAGS.query, order, dist):
      print(f"# {path}")
      for rank, (i, d) in enumerate(zip(rows, ds), start=1):
        print(f"{rank}\t{index.ids[i]}\t{label_name(index.labels[i])}\t{d:.4f}")
  if FLAGS.split:
    predict = step.make_predict(model)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    _, out = trainer.evaluate(predict, params, model_state, data, FLAGS.split, config.loss,
                              with_embeddings=True)
    scores = retrieval.evaluate(out["embeddings"], out["labels"], index)
    plot = workdir / "plots" / f"pr_curve_{FLAGS.split}.png"
    retrieval.plot_pr_curve(scores, plot, f"{data.info.name}: {FLAGS.split} queries")
    print(json.dumps({k: v for k, v in scores.items() if not k.startswith("pr_curve")}, indent=2))
    print(f"precision-recall curve: {plot}")


if __name__ == "__main__":
  cli.run(main, "medjax.retrieve", define_flags)
