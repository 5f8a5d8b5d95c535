"""Kvasir: 8 classes of gastro-intestinal endoscopy images (system 5, the VGG19/VLAD paper).

Format relied on (Pogorelov et al., "KVASIR: A Multi-Class Image Dataset for Computer
Aided Gastrointestinal Disease Detection", MMSys 2017; https://datasets.simula.no/kvasir/):
the archive unpacks to ``<folder>/<class>/*.jpg`` with the 8 classes below, JPEGs from
720x576 up to 1920x1072. Version 1 (``kvasir-dataset.zip`` -> ``kvasir-dataset/``) has 500
images per class; version 2 (``kvasir-dataset-v2.zip`` -> ``kvasir-dataset-v2/``) has 1,000
per class, the 8,000 images the paper reports ("8 000 images ... 8 categories"). Either
folder is accepted; v2 is taken when both are present.

Kvasir has no official split; the paper says "we used 6400 for the train and 1600 for the
test" without saying how. We make a deterministic stratified 80/20 split: within each
class, the 20% (rounded) of files whose salted SHA-1 of class and file name is smallest
are ``test``, the rest ``train`` (800 / 200 per class on v2). It depends only on the file
names, not on listing order or file system; bad files skipped with
``on_bad_file='skip'`` are removed after splitting and move no other file.
"""
import hashlib
from pathlib import Path

import tensorflow_datasets as tfds

from medjax.data.builders.class_folders import ClassFoldersBuilder, list_images
from medjax.data.builders.labelled_files import Entry, Listing, first_existing


class Kvasir(ClassFoldersBuilder):
  VERSION = tfds.core.Version("1.0.0")
  DESCRIPTION = "Kvasir endoscopy images, 8 classes, deterministic stratified 80/20 split."
  CLASS_NAMES = ("dyed-lifted-polyps", "dyed-resection-margins", "esophagitis", "normal-cecum",
                 "normal-pylorus", "normal-z-line", "polyps", "ulcerative-colitis")
  ARCHIVE_FOLDERS = ("kvasir-dataset-v2", "kvasir-dataset")
  TEST_FRACTION = 0.2
  SPLIT_SALT = "medjax-kvasir"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download kvasir-dataset-v2.zip (8,000 images, as in the paper) or kvasir-dataset.zip (v1)
from https://datasets.simula.no/kvasir/ and unpack it into <data_dir>/kvasir/ so that
<data_dir>/kvasir/kvasir-dataset-v2/<class>/*.jpg (or kvasir-dataset/<class>/*.jpg) exist
for the 8 classes (data_dir = config.data.manual_dir, $MEDJAX_DATA_DIR or ~/medjax_data)."""

  def _list(self, root: Path) -> Listing:
    listing = Listing()
    listing.split("train")
    listing.split("test")
    items = list_images(first_existing(root, self.ARCHIVE_FOLDERS), self.CLASS_NAMES)
    for label in range(len(self.CLASS_NAMES)):
      paths = sorted((p for p, y in items if y == label), key=self._rank)
      n_test = round(self.TEST_FRACTION * len(paths))
      for i, path in enumerate(paths):
        listing.add("test" if i < n_test else "train",
                    Entry(path, str(path.relative_to(root)), label))
    return listing

  def _rank(self, path: Path) -> str:
    return hashlib.sha1(f"{self.SPLIT_SALT}/{path.parent.name}/{path.name}".encode()).hexdigest()
