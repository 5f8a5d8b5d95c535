"""ImageCLEFmed 2016 subfigure (modality) classification: 30 classes (system 3, the
zero-bias CAE paper).

Format relied on (Garcia Seco de Herrera et al., "Overview of the ImageCLEF 2016 Medical
Task", CLEF 2016 Working Notes; http://imageclef.org/2016/medical; paper 3; and how
participants' code reads the archives):

- 6,776 training and 4,166 test subfigures (JPEG) from PubMed Central, in the 30 classes
  of the ImageCLEF modality hierarchy (the 2013 hierarchy without COMP, compound):
  diagnostic radiology DRUS DRMR DRCT DRXR DRAN DRPE DRCO; visible light DVDM DVEN DVOR;
  printed signals DSEE DSEC DSEM; microscopy DMLI DMEL DMTR DMFL; 3-D reconstructions D3DR;
  generic illustrations GTAB GPLI GFIG GSCR GFLO GSYS GGEN GGEL GCHE GMAT GNCP GHDR.
- Training set: ``SubfigureClassificationTraining2016/<CODE>/<name>.jpg``.
- Test set: released during the campaign as a flat ``SubfigureClassificationTest2016/``
  folder with a ground-truth file of lines ``<name> <CODE>`` (name without ``.jpg``);
  copies of the ground truth arranged as class folders also circulate. Both are accepted:
  class folders ``SubfigureClassificationTest2016/<CODE>/`` if present, else the flat
  folder with ``SubfigureClassificationTest2016GT.txt`` (whitespace- or comma-separated;
  the exact name of the organisers' ground-truth file is our assumption).

Labels are indices into the codes in alphabetical order, as a folder listing gives them.
"""
from pathlib import Path

import tensorflow_datasets as tfds

from medjax.data.builders.class_folders import ClassFoldersBuilder
from medjax.data.builders.labelled_files import Entry, Listing, read_rows, resolve_image

CODES = ("D3DR", "DMEL", "DMFL", "DMLI", "DMTR", "DRAN", "DRCO", "DRCT", "DRMR", "DRPE",
         "DRUS", "DRXR", "DSEC", "DSEE", "DSEM", "DVDM", "DVEN", "DVOR", "GCHE", "GFIG",
         "GFLO", "GGEL", "GGEN", "GHDR", "GMAT", "GNCP", "GPLI", "GSCR", "GSYS", "GTAB")


class Imageclef2016(ClassFoldersBuilder):
  VERSION = tfds.core.Version("1.0.0")
  DESCRIPTION = "ImageCLEFmed 2016 subfigure classification, 30 modality classes."
  CLASS_NAMES = CODES
  SPLIT_FOLDERS = {"train": "SubfigureClassificationTraining2016",
                   "test": "SubfigureClassificationTest2016"}
  TEST_GROUND_TRUTH = "SubfigureClassificationTest2016GT.txt"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Register for ImageCLEFmed 2016 (http://imageclef.org/2016/medical; the organisers grant
access to the subfigure classification data after signing the end-user agreement) and
place in <data_dir>/imageclef2016/:
  SubfigureClassificationTraining2016/<CODE>/*.jpg
  SubfigureClassificationTest2016/<CODE>/*.jpg        (test ground truth as class folders)
or SubfigureClassificationTest2016/*.jpg with SubfigureClassificationTest2016GT.txt
  (lines "<name> <CODE>") beside it
(data_dir = config.data.manual_dir, $MEDJAX_DATA_DIR or ~/medjax_data)."""

  def _list(self, root: Path) -> Listing:
    test_dir = root / self.SPLIT_FOLDERS["test"]
    if not test_dir.is_dir() or any((test_dir / code).is_dir() for code in CODES):
      return super()._list(root)
    listing = Listing()
    self._list_folder(listing, root, "train", self.SPLIT_FOLDERS["train"])
    listing.split("test")
    for where, fields in read_rows(root / self.TEST_GROUND_TRUTH):
      if len(fields) != 2 or fields[1] not in CODES:
        listing.bad_row(where, f"expected '<image name> <CODE>' with CODE one of the 30 "
                               f"classes, found {' '.join(fields)!r}")
        continue
      path = resolve_image(test_dir, fields[0])
      listing.add("test", Entry(path, str(path.relative_to(root)), CODES.index(fields[1]),
                                where=where))
    return listing
