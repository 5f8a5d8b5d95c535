"""ImageCLEF 2015 medical clustering task: X-rays labelled Body / Head-Neck / Upper-Limb /
Lower-Limb (system 1, the LeNet one-vs-all paper).

What the task documents establish (Amin & Mohammed, "Overview of the ImageCLEF 2015
medical clustering task", CLEF 2015 Working Notes; Villegas et al., "General Overview of
ImageCLEF at the CLEF 2015 Labs"; the organisers' page http://www.cvcrbd.org/data; paper 1):
500 training and 250 test X-rays, large (1600-2348 px a side, per paper 1) and grey
stored as 3 equal channels; multi-label over the four regions, an image may carry several;
an image of none of them is a "true negative" (same camera, not the human body).

What could not be confirmed (the overview's description of the archive is not available
to us) and is therefore assumed, with tolerance: each split is a folder of images
(``train/``, ``test/``) next to a ground-truth text file (``train.txt``, ``test.txt``) with
one line per image: the image file name (the suffix may be omitted) followed by its labels,
separated by commas, semicolons, tabs or spaces. Labels are either class names (any case;
``-`` and ``_`` ignored, so ``Head-Neck``, ``head_neck`` and ``HeadNeck`` agree;
``TrueNegative`` or no name at all meaning all-negative) or four 0/1 flags in the order
Body, Head-Neck, Upper-Limb, Lower-Limb. Rename the organisers' files to this layout if
they differ; images not named in the ground-truth file are ignored.

Labels are stored as the 4-hot ``"labels"`` vector (all zeros = true negative).
"""
import re
from pathlib import Path

import tensorflow_datasets as tfds

from medjax.data.builders.labelled_files import (Entry, LabelledFilesBuilder, Listing,
                                                 read_rows, resolve_image)

def _norm(name: str) -> str:
  return re.sub(r"[-_]", "", name).lower()


class Imageclef2015(LabelledFilesBuilder):
  VERSION = tfds.core.Version("1.0.0")
  DESCRIPTION = "ImageCLEF 2015 medical clustering: multi-label body regions of X-rays."
  MULTI_LABEL = True
  CLASS_NAMES = ("Body", "Head-Neck", "Upper-Limb", "Lower-Limb")
  NEGATIVE = "TrueNegative"
  # split -> (image folder, ground-truth file)
  SPLITS = {"train": ("train", "train.txt"), "test": ("test", "test.txt")}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Register for the ImageCLEF 2015 medical clustering task (http://www.imageclef.org/2015,
data at http://www.cvcrbd.org/data) and place in <data_dir>/imageclef2015/:
  train/<image>, train.txt   (500 training X-rays and their ground truth)
  test/<image>,  test.txt    (250 test X-rays and their ground truth)
each .txt line: "<image name> <label>[,<label>...]" with labels among Body, Head-Neck,
Upper-Limb, Lower-Limb (none, or TrueNegative, for a true negative), or four 0/1 flags
in that order (data_dir = config.data.manual_dir, $MEDJAX_DATA_DIR or ~/medjax_data)."""

  def _labels(self, tokens: list[str]) -> list[float] | str:
    """The 4-hot vector for a row's label tokens, or the reason they cannot be read."""
    if len(tokens) == len(self.CLASS_NAMES) and set(tokens) <= {"0", "1"}:
      return [float(t) for t in tokens]
    index = {_norm(n): i for i, n in enumerate(self.CLASS_NAMES)}
    vector = [0.0] * len(self.CLASS_NAMES)
    for token in tokens:
      if _norm(token) == _norm(self.NEGATIVE):
        continue
      if _norm(token) not in index:
        return (f"label {token!r} is not one of {list(self.CLASS_NAMES)}, {self.NEGATIVE} "
                f"or four 0/1 flags")
      vector[index[_norm(token)]] = 1.0
    if any(vector) and any(_norm(t) == _norm(self.NEGATIVE) for t in tokens):
      return f"is marked {self.NEGATIVE} and also has a body-region label"
    return vector

  def _list(self, root: Path) -> Listing:
    listing = Listing()
    for split, (folder, table) in self.SPLITS.items():
      listing.split(split)
      for where, fields in read_rows(root / table):
        name, *tokens = fields
        labels = self._labels(tokens)
        if isinstance(labels, str):
          listing.bad_row(where, labels)
          continue
        path = resolve_image(root / folder, name)
        listing.add(split, Entry(path, f"{folder}/{path.name}", labels, where=where))
    return listing
