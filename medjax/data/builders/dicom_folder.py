"""Users' DICOM exports (e.g. from a PACS): ``<root>/<split>/<class>/*.dcm``.

Same layout and class discovery as :mod:`image_folder`; each file is converted once, at
preparation, to what a radiologist's viewer would show, stored as a 16-bit grayscale PNG
(8-bit RGB PNG for colour DICOM), so the pipeline downstream (``decode`` scales 16-bit
PNGs by 65535) is unchanged. Conversion, following DICOM PS3.3 C.7.6.3 and C.11.2, by
pydicom's own functions:

1. Modality LUT (``apply_modality_lut``): the Modality LUT Sequence, else
   ``RescaleSlope`` / ``RescaleIntercept`` (to e.g. Hounsfield units).
2. VOI LUT (``apply_voi_lut``): the first VOI LUT Sequence item, else the first
   ``WindowCenter`` / ``WindowWidth`` pair with its ``VOILUTFunction`` (``LINEAR``,
   ``LINEAR_EXACT`` or ``SIGMOID``), scaled from the VOI output range onto 16 bits; without
   either (or with a linear window narrower than 1), the image's own min-max range.
3. ``MONOCHROME1`` (higher values darker) is inverted so that white is dense for every
   image, as for ``MONOCHROME2``.

Colour (``RGB``, and JPEG's ``YBR_FULL``/``YBR_FULL_422``, which pydicom gives as RGB) is
stored as it is. Files that pydicom cannot read, that lack pixel data, have several frames,
or use another photometric interpretation (``PALETTE COLOR``) are problems, named in the
one error (or skipped with ``on_bad_file='skip'``). Compressed transfer syntaxes decode when
pydicom's optional pixel-data plugins (e.g. ``pylibjpeg``) are installed; without them
the file is reported with pydicom's message.
"""
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medjax.data import images, validate
from medjax.data.builders.image_folder import ImageFolder

_MAX = 65535.0
# Colour interpretations: RGB, and the YCbCr of JPEG-compressed colour (endoscopy,
# ultrasound, photographs), which pydicom's pixel_array converts to RGB.
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422")


def is_dicom(path: Path) -> bool:
  """A DICOM file: named ``.dcm`` or ``.dicom``, or, with no suffix or a numeric one (PACS
  exports name files ``IM000001`` or by their UID, ``1.2.840.113619.2.55.3.12``), one that
  starts with DICOM's preamble and ``DICM``. ``DICOMDIR`` (the export's index) is none."""
  suffix = path.suffix.lower()
  if suffix in (".dcm", ".dicom"):
    return True
  if (suffix and not suffix[1:].isdigit()) or path.name.upper() == "DICOMDIR":
    return False
  try:
    with path.open("rb") as f:
      f.seek(128)
      return f.read(4) == b"DICM"
  except OSError:
    return False


def _first(value) -> float:
  """A DICOM decimal string that may be multi-valued (several windows) -> its first value."""
  return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)


def _voi(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
  """The VOI LUT or window of ``ds`` applied to modality values, on [0, 1]; None without
  one. Its output range: the LUT's entry bits, or the window's ends (pydicom maps values
  below and above the window to them)."""
  if ds.get("VOILUTSequence"):
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    shown = apply_voi_lut(np.rint(values).astype(np.int64), ds).astype(np.float64)
    low, high = 0.0, 2.0 ** bits - 1
  elif "WindowCenter" in ds and "WindowWidth" in ds and _first(ds.WindowWidth) >= 1.0:
    shown = apply_voi_lut(values.astype(np.float64), ds)
    low, high = apply_voi_lut(np.array([-np.inf, np.inf]), ds)
  else:
    return None
  return np.clip((shown - low) / (high - low), 0.0, 1.0) if high != low else None


def to_display(ds: pydicom.Dataset) -> np.ndarray:
  """Pixel data of a single-frame DICOM dataset as uint16 (grayscale) or uint8 (RGB)."""
  if "PixelData" not in ds:
    raise ValueError("has no pixel data (not an image, or the file is cut short)")
  photometric = str(ds.get("PhotometricInterpretation", "")).strip()
  if photometric not in ("MONOCHROME1", "MONOCHROME2") + COLOUR:
    raise ValueError(f"photometric interpretation {photometric or 'missing'!r} is not "
                     f"supported ({', '.join(('MONOCHROME1', 'MONOCHROME2') + COLOUR)} "
                     f"expected)")
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  if frames != 1:
    raise ValueError(f"has {frames} frames; one 2-D image per file is expected")
  pixels = ds.pixel_array
  if photometric in COLOUR:  # pydicom's pixel_array gives YBR (JPEG colour) as RGB.
    return pixels.astype(np.uint8)
  modality_lut = ds.get("ModalityLUTSequence")
  if modality_lut and int(modality_lut[0].LUTDescriptor[2]) not in (8, 16):
    # pydicom 3.0 reads entries of 10-15 bits as numpy dtype f"uint{bits}", which does not
    # exist; they are 16-bit words. The windowing scales by its own ends, so bits do not matter.
    modality_lut[0].LUTDescriptor = [*modality_lut[0].LUTDescriptor[:2], 16]
  values = np.asarray(apply_modality_lut(pixels, ds), np.float64)
  shown = _voi(values, ds)
  if shown is None:
    low, high = values.min(), values.max()
    shown = (values - low) / (high - low) if high > low else np.zeros_like(values)
  if photometric == "MONOCHROME1":
    shown = 1.0 - shown
  return np.rint(shown * _MAX).astype(np.uint16)


def dicom_to_png(path: Path) -> bytes:
  """The PNG bytes stored for DICOM file ``path`` (see the module docstring)."""
  return images.png(to_display(pydicom.dcmread(path)))


def read_dicom(path: Path, min_side: int = validate.MIN_SIDE):
  """``(problem, display image)`` of one DICOM file, converted once: the image is None
  where the file cannot be read, and comes with its problem where it is too small."""
  if path.stat().st_size == 0:
    return validate.Problem(str(path), "is empty (0 bytes)"), None
  try:
    image = to_display(pydicom.dcmread(path))
  except Exception as e:  # pydicom raises many types for damaged files; all mean "bad".
    return validate.Problem(str(path), f"is not a readable DICOM image ({e})"), None
  height, width = image.shape[:2]
  if min(height, width) < min_side:
    return validate.Problem(str(path), f"is implausibly small ({width}x{height} pixels; at "
                                       f"least {min_side} expected on each side)"), image
  return None, image


def check_dicom(path: Path, min_side: int = validate.MIN_SIDE):
  """``(problem, PIL mode)`` of one DICOM file, as :func:`validate.check_image` for images."""
  problem, image = read_dicom(path, min_side)
  return problem, None if image is None else ("RGB" if image.ndim == 3 else "I;16")


class DicomFolder(ImageFolder):
  VERSION = "1.1.0"  # 1.1.0: Modality and VOI LUT Sequences, VOILUTFunction (pydicom's).
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
