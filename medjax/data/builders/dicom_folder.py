"""Users' DICOM exports (e.g. from a PACS): ``<root>/<split>/<class>/*.dcm``.

Same layout and class discovery as :mod:`image_folder`; each file is converted once, at
preparation, to what a radiologist's viewer would show, stored as a 16-bit grayscale PNG
(8-bit RGB PNG for colour DICOM), so the pipeline downstream (``decode`` scales 16-bit
PNGs by 65535) is unchanged. Conversion, following DICOM PS3.3 C.7.6.3 and C.11.2:

1. Modality LUT: ``RescaleSlope`` / ``RescaleIntercept`` (to e.g. Hounsfield units).
2. VOI LUT: the linear window of the first ``WindowCenter`` / ``WindowWidth`` pair when
   present (C.11.2.1.2.1), else the image's own min-max range. VOI LUT sequences and
   non-linear ``VOILUTFunction`` values are not applied.
3. ``MONOCHROME1`` (higher values darker) is inverted so that white is dense for every
   image, as for ``MONOCHROME2``.

Files that pydicom cannot read, that lack pixel data, have several frames, or use a
photometric interpretation other than MONOCHROME1/2 or RGB are problems, named in the one
error (or skipped with ``on_bad_file='skip'``). Compressed transfer syntaxes decode when
pydicom's optional pixel-data plugins (e.g. ``pylibjpeg``) are installed; without them
the file is reported with pydicom's message.
"""
import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from medjax.data import validate
from medjax.data.builders.image_folder import ImageFolder

_MAX = 65535.0


def _first(value) -> float:
  """A DICOM decimal string that may be multi-valued (several windows) -> its first value."""
  return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
  """DICOM linear VOI window (PS3.3 C.11.2.1.2.1) onto [0, 65535]."""
  scaled = ((values - (center - 0.5)) / (width - 1.0) + 0.5) * _MAX
  return np.clip(scaled, 0.0, _MAX)


def to_display(ds: pydicom.Dataset) -> np.ndarray:
  """Pixel data of a single-frame DICOM dataset as uint16 (grayscale) or uint8 (RGB)."""
  photometric = str(ds.get("PhotometricInterpretation", "")).strip()
  if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
    raise ValueError(f"photometric interpretation {photometric or 'missing'!r} is not "
                     f"supported (MONOCHROME1, MONOCHROME2 or RGB expected)")
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  if frames != 1:
    raise ValueError(f"has {frames} frames; one 2-D image per file is expected")
  pixels = ds.pixel_array
  if photometric == "RGB":
    return pixels.astype(np.uint8)
  values = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1.0) or 1.0) \
      + float(ds.get("RescaleIntercept", 0.0) or 0.0)
  center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
  if center is not None and width is not None and _first(width) >= 1.0:
    shown = window(values, _first(center), _first(width))
  else:
    low, high = values.min(), values.max()
    shown = (values - low) / (high - low) * _MAX if high > low else np.zeros_like(values)
  if photometric == "MONOCHROME1":
    shown = _MAX - shown
  return np.rint(shown).astype(np.uint16)


def dicom_to_png(path: Path) -> bytes:
  """The PNG bytes stored for DICOM file ``path`` (see the module docstring)."""
  image = to_display(pydicom.dcmread(path))
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def check_dicom(path: Path, min_side: int = validate.MIN_SIDE):
  """``(problem, PIL mode)`` of one DICOM file, as :func:`validate.check_image` for images."""
  try:
    image = to_display(pydicom.dcmread(path))
  except Exception as e:  # pydicom raises many types for damaged files; all mean "bad".
    return validate.Problem(str(path), f"is not a readable DICOM image ({e})"), None
  mode = "RGB" if image.ndim == 3 else "I;16"
  height, width = image.shape[:2]
  if min(height, width) < min_side:
    return validate.Problem(str(path), f"is implausibly small ({width}x{height} pixels; at "
                                       f"least {min_side} expected on each side)"), mode
  return None, mode


class DicomFolder(ImageFolder):
  VERSION = "1.0.0"
  DESCRIPTION = "A folder of DICOM files: <root>/<split>/<class>/*.dcm, stored as PNG."
  IMAGE_SUFFIXES = (".dcm",)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Export your studies as DICOM files named *.dcm and arrange them as
<root>/<split>/<class>/<file>.dcm (split folders such as train/, test/; one folder per
class); set config.data.name = 'dicom_folder' and config.data.manual_dir so that <root>
is <manual_dir>/dicom_folder."""

  def _check_file(self, path: Path):
    return check_dicom(path, self._min_side)

  def _encoded(self, path: Path) -> bytes:
    return dicom_to_png(path)
