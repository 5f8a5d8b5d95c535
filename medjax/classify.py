"""Classifies images with an ImageNet-pretrained backbone: a check that weights imported.

    python -m medjax.classify --backbone=efficientnet_lite0 [--weights=FILE] IMAGE...

Prints, per image, ``--top_k`` lines (default 5, best first), each
``IMAGE<TAB>LABEL<TAB>PROBABILITY`` with the probability to 4 decimals -- one line per
prediction so the output stays greppable and ``cut``-able. Images are resized and
normalised as the backbone's :class:`~medjax.models.backbones.BackboneSpec` says (``prepare``,
with the normalisation from ``medjax.data.ops.NORMALISATIONS``, the table the tf.data
pipelines use). Class names are the standard 1000 ImageNet classes, shipped as
``imagenet_classes.txt`` next to this file so the command needs no data directory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import flags
from PIL import Image, UnidentifiedImageError

from medjax import cli

# JAX, TensorFlow (through medjax.data.ops) and the models are imported where used, so that
# --help and flag errors answer at once.

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("backbone", "efficientnet_lite0",
                      "Backbone name (a key of medjax.models.backbones.SPECS).", flag_values=fv)
  flags.DEFINE_string("weights", None, "Weights file; default: the backbone's default weights.",
                      flag_values=fv)
  flags.DEFINE_integer("top_k", 5, "Predictions printed per image.", flag_values=fv)


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
  try:
    return Image.open(path)
  except FileNotFoundError:
    raise cli.UserError(f"{path} does not exist; give image files") from None
  except UnidentifiedImageError:
    raise cli.UserError(f"{path} is not an image Pillow can read") from None


def classify(backbone: str, weights: str | None, images: list[str], top_k: int = 5):
  """Returns per image ``[(label, probability), ...]`` best first."""
  import jax

  from medjax import kernels
  from medjax.weights import load
  module, variables, spec = load.load_backbone(backbone, weights, include_top=True)
  classes = imagenet_classes()
  batch = np.stack([prepare(spec, _open(p)) for p in images])
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
  for image, preds in zip(images, classify(FLAGS.backbone, FLAGS.weights, images, FLAGS.top_k)):
    for label, prob in preds:
      print(f"{image}\t{label}\t{prob:.4f}")


if __name__ == "__main__":
  cli.run(main, "medjax.classify", define_flags)
