"""Stand-in data for the builder tests: tiny images written in an archive's own layout.

The real archives are large or not redistributable; the builders only care about layout,
names and label files, so tests write small generated images where the real ones would be.
"""
import io
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from medjax.data import builders


def png_bytes(size: int = 24, mode: str = "L", seed: int = 0) -> bytes:
  rng = np.random.default_rng(seed)
  shape = (size, size, 3) if mode == "RGB" else (size, size)
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, format="PNG")
  return buffer.getvalue()


def write_image(path: Path, size: int = 24, mode: str = "L", seed: int = 0) -> Path:
  """A small image at ``path``, encoded as the suffix says (PNG or JPEG)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix.lower() in (".jpg", ".jpeg"):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")
  else:
    path.write_bytes(png_bytes(size, mode, seed))
  return path


def write_truncated(path: Path) -> Path:
  """An image file cut in half, as an interrupted copy leaves it."""
  path.parent.mkdir(parents=True, exist_ok=True)
  data = png_bytes(32)
  path.write_bytes(data[: len(data) // 2])
  return path


def prepare(name: str, data_dir: Path, tfds_dir: Path, on_bad_file: str = "fail"):
  return builders.get_builder(name, manual_dir=str(data_dir), tfds_dir=str(tfds_dir),
                              on_bad_file=on_bad_file)


def examples(builder, split: str, key: str = "label") -> dict[str, object]:
  """``{id: label}`` of a prepared split, without decoding images."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  out = {}
  for ex in ds.as_numpy_iterator():
    value = ex[key]
    out[ex["id"].decode()] = value.tolist() if isinstance(value, np.ndarray) else value
  return out
