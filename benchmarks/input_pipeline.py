"""The host input pipeline on the real chest X-rays: decode + resize + CLAHE, images/s.

medjax runs system 4's preprocessing string through ``medjax.data.ops.compose`` in a
parallel ``tf.data`` map, exactly as the input pipeline does (minus the TFDS record
reading, so no dataset needs preparing first). Resizing comes before CLAHE, so the
equalisation runs on 128 x 128 instead of ~2000 x 1500 pixels. The peer is the loop one
would write with PIL and scikit-image, in the same order. Without the data the case is
skipped with a message (before TensorFlow is imported: an accelerator box running the
rest of the suite need not have it).
"""
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import exposure

from benchmarks import timing

PP = "decode(1)|resize(128)|clahe"
SIZE = 128


def data_dir() -> Path:
  from medjax.data import paths
  return paths.find("chest_xray") or paths.data_dirs()[0] / "chest_xray"


def medjax_pipeline(paths: list[str]):
  """The ``tf.data.Dataset`` of preprocessed batches of ``paths``."""
  try:
    import tensorflow as tf
  except ImportError as e:
    raise timing.SkipCase(f"TensorFlow is not importable ({e}); medjax's input pipeline is "
                          "tf.data") from e
  from medjax.data import ops
  preprocess = ops.compose(PP)
  seed = tf.constant([0, 0], tf.int64)
  return (tf.data.Dataset.from_tensor_slices(paths)
          .map(lambda p: preprocess({"image": tf.io.read_file(p)}, seed)["image"],
               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(32).prefetch(tf.data.AUTOTUNE))


def pil_skimage(path: str) -> np.ndarray:
  image = Image.open(path).convert("L").resize((SIZE, SIZE), Image.BILINEAR)
  return exposure.equalize_adapthist(np.asarray(image, np.float32) / 255.0, clip_limit=0.01,
                                     nbins=256).astype(np.float32)


def input_pipeline_case(images: int, repeats: int) -> dict:
  root = data_dir()
  paths = sorted(str(p) for p in root.glob("*/*/*.jpeg"))[:images]
  if not paths:
    raise timing.SkipCase(f"no chest X-rays under {root} (set $MEDJAX_DATA_DIR or place the "
                   f"Kermany chest_xray folder in ../shared/data)")
  dataset = medjax_pipeline(paths)

  def medjax_fn():
    return np.concatenate([batch.numpy() for batch in dataset])

  def peer_fn():
    return np.stack([pil_skimage(p) for p in paths])

  diff = float(np.abs(medjax_fn()[..., 0] - peer_fn()).mean())
  return timing.compare(f"input_pipeline/chest_xray_{len(paths)}img_{SIZE}", medjax_fn,
                        "pil_skimage", peer_fn, repeats=repeats, items=len(paths),
                        mean_abs_diff=diff)


def cases(quick: bool) -> list[timing.Case]:
  repeats = 2 if quick else 3
  return [timing.Case("input_pipeline", lambda: input_pipeline_case(512, repeats))]
