"""What a raw (non-DICOM) image file is stored as: at preparation, and wherever a finished
run reads a new image (predict, explain, serve), so that training and use see one image.

TensorFlow's decoder (``ops.decode``) reads PNG, JPEG, BMP and GIF and scales a 16-bit PNG
by 65535. So:

* PNG, JPEG, BMP and GIF files are stored as their own bytes, except a greyscale PNG of
  more than 8 bits whose values do not reach 16 bits (below);
* TIFF, which TensorFlow cannot decode, is re-encoded losslessly as PNG;
* greyscale of more than 8 bits (PIL modes ``I;16*``, ``I``, ``F``): an X-ray detector's
  12-bit values (0-4095) in a 16-bit file would decode to at most 1/16, a nearly black
  image. The image's bit depth is taken as the smallest of 8, 10, 12, 14 or 16 bits that
  holds its largest value (a 12-bit image whose brightest pixel is 3000 is still 12-bit;
  8-bit values widened to 16 bits, every one a multiple of 257, are 16-bit), and its values are scaled from that depth onto the full 16 bits, so that 4095 in a
  12-bit image is white, as in a viewer, and images of one detector keep one scale.
  Negative or fractional values (32-bit integer or float TIFFs) have no bit depth: they
  are stretched from their minimum to their maximum.
"""
import io
from pathlib import Path

import numpy as np
from PIL import Image

BIT_DEPTHS = (8, 10, 12, 14, 16)
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_FULL = 65535


def bit_depth(maximum: float) -> int:
  """The smallest of :data:`BIT_DEPTHS` whose range holds ``maximum`` (16 beyond)."""
  return next((b for b in BIT_DEPTHS if maximum <= 2 ** b - 1), BIT_DEPTHS[-1])


def stored_bits(values: np.ndarray) -> int:
  """The bit depth of unsigned integer greyscale: :func:`bit_depth` of its maximum, except
  that 8-bit values widened to 16 bits (every value a multiple of 257, as ``x * 257`` or a
  converter writes them) are 16-bit however dark the image."""
  if not (values.astype(np.int64) % 257).any():
    return 16
  return bit_depth(int(values.max()))


def full_range(values: np.ndarray) -> np.ndarray:
  """Greyscale of more than 8 bits as uint16 spanning 0-65535 (see the module docstring)."""
  values = np.asarray(values)
  if np.issubdtype(values.dtype, np.integer) and values.min() >= 0 and values.max() <= _FULL:
    top = 2 ** stored_bits(values) - 1
    return np.rint(values.astype(np.float64) * (_FULL / top)).astype(np.uint16)
  values = values.astype(np.float64)
  low, high = np.nanmin(values), np.nanmax(values)
  if not high > low:
    return np.zeros(values.shape, np.uint16)
  return np.rint(np.clip((values - low) / (high - low), 0, 1) * _FULL).astype(np.uint16)


def png(image: Image.Image | np.ndarray) -> bytes:
  buffer = io.BytesIO()
  (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(buffer, "PNG")
  return buffer.getvalue()


def _converted(im: Image.Image) -> bytes | None:
  """PNG bytes for an opened PNG or TIFF that TensorFlow would not decode as a viewer
  shows it; None where its own bytes serve."""
  if im.mode in _WIDE_GREY:
    values = np.asarray(im)
    if im.format == "PNG" and stored_bits(values) == 16:
      return None  # Already full range: its own bytes, as TensorFlow scales them.
    return png(full_range(values))
  if im.format == "PNG":
    return None
  im.load()
  return png(im if im.mode in ("1", "L", "LA", "P", "RGB", "RGBA") else im.convert("RGB"))


def encoded(path: Path) -> bytes | Path:
  """What is stored (and decoded) for image file ``path``: ``path`` itself, meaning its own
  bytes, where TensorFlow decodes it as a viewer shows it; PNG bytes otherwise."""
  if path.suffix.lower() not in (".png", ".tif", ".tiff"):
    return path
  with Image.open(path) as im:
    converted = _converted(im)
  return path if converted is None else converted


def encoded_bytes(data: bytes) -> bytes:
  """:func:`encoded` of an image's bytes (an upload), for images PIL reads; else ``data``."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      converted = _converted(im) if im.format in ("PNG", "TIFF") else None
  except (OSError, ValueError):
    return data  # Not an image PIL reads: the caller's own check names it.
  return data if converted is None else converted
