"""Classifies images with an ImageNet-pretrained backbone: a check that weights imported.

    python -m medjax.classify --backbone=efficientnet_lite0 [--weights=FILE] IMAGE...

Prints, per image, ``--k`` lines (default 5, best first), each
``IMAGE<TAB>LABEL<TAB>PROBABILITY`` with the probability to 4 decimals -- one line per
prediction so the output stays greppable and ``cut``-able. Images are resized and
normalised as the backbone's :class:`~medjax.models.backbones.BackboneSpec` says (``prepare``,
with the normalisation from ``medjax.data.ops.NORMALISATIONS``, the table the tf.data
pipelines use). Class names are the standard 1000 ImageNet classes, shipped as
``imagenet_classes.txt`` next to this file so the command needs no data directory.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from absl import flags
from PIL import Image

from medjax import cli

# JAX, TensorFlow (through medjax.data.ops) and the models are imported where used, so that
# --help and flag errors answer at once.

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("backbone", "efficientnet_lite0",
                      "Backbone name (a key of medjax.models.backbones.SPECS).", flag_values=fv)
  flags.DEFINE_string("weights", None, "Weights file; default: the backbone's default weights.",
                      flag_values=fv)
  flags.DEFINE_integer("k", 5, "Predictions printed per image (as retrieve's --k).",
                       lower_bound=1, upper_bound=1000, flag_values=fv)  # ImageNet's classes.


def imagenet_classes() -> list[str]:
  return (Path(__file__).with_name("imagenet_classes.txt")).read_text().splitlines()


def prepare(spec: backbones.BackboneSpec, image: Image.Image) -> np.ndarray:
  """A PIL image -> float32 ``(H, W, 3)`` network input, resized and normalised per ``spec``."""
  from medjax.data import ops
  from medjax.models import backbones
  image = image.convert("RGB")
  for op, size in backbones.resize_steps(spec):
    if op == "resize_short":
      scale = size / min(image.size)
      image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)),
                           Image.BILINEAR)
    elif op == "central_crop":
      left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
      image = image.crop((left, top, left + size, top + size))
    else:
      image = image.resize((size, size), Image.BILINEAR)
  unit = np.asarray(image, np.float32) / 255.0
  return np.asarray(ops.NORMALISATIONS[spec.normalisation](unit), np.float32)


def _open(path) -> Image.Image:
  """The image, fully decoded by the check predict and explain use (DICOM converted);
  ``UserError`` saying why not."""
  from medjax import inference
  path = Path(path)
  encoded, why = inference.read_image(path)
  if encoded is None:
    raise cli.UserError(f"{path} is not an image classify can read: it {why}")
  return Image.open(io.BytesIO(encoded))


def classify(backbone: str, weights: str | None, images: list[str], top_k: int = 5):
  """Returns per image ``[(label, probability), ...]`` best first."""
  import jax

  from medjax import kernels
  from medjax.weights import load
  opened = [_open(p) for p in images]  # Before the weights load: a bad image fails at once.
  try:
    module, variables, spec = load.load_backbone(backbone, weights, include_top=True)
  except (OSError, ValueError, pickle.UnpicklingError) as e:
    if weights is None:
      raise
    raise cli.UserError(f"--weights={weights}: {e}") from None
  classes = imagenet_classes()
  batch = np.stack([prepare(spec, image) for image in opened])
  logits, _ = kernels.jit(module.apply)(variables, batch)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  if probs.shape[-1] != len(classes):
    raise ValueError(f"{backbone} predicts {probs.shape[-1]} classes, not the "
                     f"{len(classes)} ImageNet classes")
  return [[(classes[i], float(p[i])) for i in np.argsort(-p)[:top_k]] for p in probs]


def main(argv):
  images = argv[1:]
  if not images:
    raise cli.UserError("give at least one IMAGE")
  from medjax.models import backbones
  if FLAGS.backbone not in backbones.SPECS:
    raise cli.UserError(f"--backbone={FLAGS.backbone!r} is unknown; known: "
                        f"{sorted(backbones.SPECS)}")
  for image, preds in zip(images, classify(FLAGS.backbone, FLAGS.weights, images, FLAGS.k)):
    for label, prob in preds:
      print(f"{image}\t{label}\t{prob:.4f}")


if __name__ == "__main__":
  cli.run(main, "medjax.classify", define_flags)
