"""Writes a finished run as a TensorFlow SavedModel that needs neither medjax nor JAX.

  python -m medjax.export --workdir=W --out=DIR

The SavedModel's ``serving_default`` signature takes a batch of encoded image files
(``images``: 1-D ``tf.string``; PNG, JPEG, BMP or GIF, as ``tf.io.decode_image`` reads
them) and returns ``scores`` ``(batch, classes)``: the run's own evaluation preprocessing,
done in TensorFlow with the run's ops (:mod:`medjax.data.ops`, the training mean image
baked in), then the model (and SVM) converted by ``jax2tf`` with a polymorphic batch.
``DIR/classes.txt`` lists the classes in score order. Ops that run Python in medjax
(``clahe``, via scikit-image) are saved in their graph form, which gives the same output
(:func:`medjax.data.ops.compose` with ``graph_only``).
"""
from pathlib import Path

from absl import flags

from medjax import cli
from medjax.atomic import save_text

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags, defined only when it runs: tests import several commands."""
  flags.DEFINE_string("workdir", None, "Workdir of a finished run.", required=True, flag_values=fv)
  flags.DEFINE_string("out", None, "Folder to write the SavedModel to.", required=True,
                      flag_values=fv)


def export(run, out: Path) -> Path:
  """Writes the SavedModel of ``run`` to ``out``; returns ``out``."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  from medjax.data import ops
  from medjax.kernels import onednn
  preprocess = ops.compose(run.pp, run.context, graph_only=True)
  image_shape = run.preprocess_shape()
  batch_shape = f"(b, {', '.join(map(str, image_shape))})"
  with onednn.disabled():  # A SavedModel cannot carry the custom call.
    scores = jax2tf.convert(lambda v, x: run.scores(v, x), with_gradient=False,
                            polymorphic_shapes=[None, batch_shape])
    module = tf.Module()
    module.variables_ = tf.nest.map_structure(tf.Variable, _numpy_tree(run.variables))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")],
                 autograph=False)
    def serve(images):
      zero = tf.zeros([2], tf.int64)
      batch = tf.map_fn(lambda data: preprocess({"image": data}, zero)["image"], images,
                        fn_output_signature=tf.TensorSpec(image_shape, tf.float32))
      return {"scores": scores(module.variables_, batch)}

    module.serve = serve
    out.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(out), signatures={"serving_default": serve})
  save_text(out / "classes.txt", "\n".join(run.class_names) + "\n")
  return out


def _numpy_tree(tree):
  import jax
  import numpy as np
  return jax.tree.map(np.asarray, tree)


def main(argv):
  from medjax.data import tf_runtime
  tf_runtime.configure()
  from medjax import inference
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}")
  print(export(inference.load(FLAGS.workdir), Path(FLAGS.out)))


if __name__ == "__main__":
  cli.run(main, "medjax.export", define_flags)
