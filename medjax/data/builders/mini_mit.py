"""Mini-MIT: bookstore / library / inside bus from MIT Indoor-67 (system 5, the VGG19/VLAD
paper).

Paper 5 (section 6.1.1): "a reduced data set from the MIT 67 scenes data set ... a train
set and a test set, and each of them contains three categories of images: bookstore,
library and inside a bus. There are 40 images in each category for both sets." The
reduced set itself ("taken from here") is not identified, so we rebuild it from the
official MIT Indoor-67 distribution (Quattoni & Torralba, "Recognizing Indoor Scenes",
CVPR 2009; http://web.mit.edu/torralba/www/indoor.html): ``indoorCVPR_09.tar`` unpacks to
``Images/<category>/*.jpg`` (categories ``bookstore``, ``library``, ``inside_bus``), and
``TrainImages.txt`` / ``TestImages.txt`` list the official split, one ``<category>/<file>``
per line, 80 training and 20 test images per category.

Our reading: ``train`` = the first 40 images of each category in ``TrainImages.txt``
order. The official test list has only 20 per category, so ``test`` = those 20 followed
by the next 20 of ``TrainImages.txt`` (its entries 41-60 of the category): 40 per class,
disjoint from ``train``, deterministic, and using every official test image. Lines of other
categories are ignored; a line that is not ``<category>/<file>`` is a problem.
"""
from pathlib import Path

import tensorflow_datasets as tfds

from medjax.data.builders.labelled_files import (Entry, LabelledFilesBuilder, Listing,
                                                 read_lines)


class MiniMit(LabelledFilesBuilder):
  VERSION = tfds.core.Version("1.0.0")
  DESCRIPTION = "Mini-MIT: 3 MIT Indoor-67 categories, 40 train + 40 test images each."
  CLASS_NAMES = ("bookstore", "library", "inside_bus")
  PER_CLASS = 40
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download indoorCVPR_09.tar, TrainImages.txt and TestImages.txt from
http://web.mit.edu/torralba/www/indoor.html and place in <data_dir>/mini_mit/:
  Images/<category>/*.jpg   (the unpacked tar)
  TrainImages.txt, TestImages.txt
(data_dir = config.data.manual_dir, $MEDJAX_DATA_DIR or ~/medjax_data)."""

  def _read_list(self, root: Path, name: str, listing: Listing) -> dict[str, list[Entry]]:
    """The entries of ``name`` per category of ours, in the list's order."""
    per_class = {c: [] for c in self.CLASS_NAMES}
    for where, line in read_lines(root / name):
      category, sep, file = line.replace("\\", "/").partition("/")
      if not sep or not file or "/" in file:
        listing.bad_row(where, f"expected '<category>/<file>', found {line!r}")
      elif category in per_class:
        per_class[category].append(Entry(root / "Images" / category / file,
                                         f"{category}/{file}",
                                         self.CLASS_NAMES.index(category), where=where))
    return per_class

  def _list(self, root: Path) -> Listing:
    listing = Listing()
    listing.split("train")
    listing.split("test")
    official_train = self._read_list(root, "TrainImages.txt", listing)
    official_test = self._read_list(root, "TestImages.txt", listing)
    n = self.PER_CLASS
    for category in self.CLASS_NAMES:
      train = official_train[category][:n]
      test = (official_test[category] + official_train[category][n:])[:n]
      for entry in train:
        listing.add("train", entry)
      for entry in test:
        listing.add("test", entry)
    return listing
