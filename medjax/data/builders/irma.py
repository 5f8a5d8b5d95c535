r"""IRMA radiographs of the ImageCLEFmed 2009 annotation task (the IRMA CNN paper's data).

Format relied on (Tommasi et al., "Overview of the CLEF 2009 Medical Image Annotation
Track"; Deserno & Ott, "15,363 IRMA images of 193 categories for ImageCLEFmed2009",
doi:10.18154/RWTH-2016-06143; the label files in ../shared/data/irma/):

- Label tables, semicolon-separated, with the header ``image_id;irma_code;05_class;
  05_irma_code_submask;06_class;06_irma_code;07_irma_code;08_irma_code`` (one line) and
  ``\N`` for missing values: training ``train_codes_02.csv`` (12,677 rows), test
  ``test_codes_03.csv`` (1,733 rows). The RWTH/Kaggle copies name them
  ``ImageCLEFmed2009_{train,test}_codes.0{2,3}.csv``; either name is accepted. The training
  file has CRLF line endings.
- Images ``<image_id>.png`` in ``ImageCLEFmed2009_train.02/`` and
  ``ImageCLEFmed2009_test.03/`` (the archive's folder names, as used by the task's
  participants).
- The IRMA code ``TTTT-DDD-AAA-BBB`` (technical, directional, anatomical, biological axes)
  uses the characters 0-9 and a-z (``12f``, ``4a0`` occur). The first anatomical character
  is the body region: 1 whole body, 2 cranium, 3 spine, 4 upper extremity, 5 chest,
  6 breast, 7 abdomen, 8 pelvis, 9 lower extremity.

The paper keeps the five regions 2, 3, 4, 5, 9 ("discarding the classes with low sample
density and high subclasses variability"): config ``anatomy5`` (the default). Config
``anatomy9`` keeps all nine regions (``config.data.name = "irma/anatomy9"``).

Its 5x5 networks E-G were trained on 3 and 4 classes (Table 3: "FC-classes(3,4)"), and
"the choice of classes went from coarser to finer of three to five classes (Cranium,
Spine, Upper extremity, chest, Lower extremity)". Our reading: the 3- and 4-class sets
are the first three and four regions of that list, adding one region at a time:
``anatomy3`` = cranium, spine, upper extremity; ``anatomy4`` = those and chest. The other
plausible reading (coarser classes as merged regions, e.g. head / trunk / extremities) is
not built: the paper names no merge and its list is of single regions. Rows of
other regions are left out and counted per split in ``info.metadata['excluded']``; rows
whose code cannot be parsed, repeated ids and missing images are problems (one error, or
skipped and counted with ``on_bad_file='skip'``). The full code and its four axes are kept
as text features for retrieval evaluation.
"""
import dataclasses
import re
from pathlib import Path

import tensorflow_datasets as tfds

from medjax.data.builders.labelled_files import (Entry, LabelledFilesBuilder, Listing,
                                                 first_existing, read_rows)

REGIONS = {"1": "whole_body", "2": "cranium", "3": "spine", "4": "upper_extremity",
           "5": "chest", "6": "breast", "7": "abdomen", "8": "pelvis", "9": "lower_extremity"}
_CODE = re.compile(r"([0-9a-z]{4})-([0-9a-z]{3})-([0-9a-z]{3})-([0-9a-z]{3})")
_AXES = ("irma_technical", "irma_directional", "irma_anatomical", "irma_biological")


def parse_code(text: str) -> tuple[str, str, str, str] | None:
  """The four axes of an IRMA code (lower-cased), or None if ``text`` is not one."""
  match = _CODE.fullmatch(text.strip().lower())
  return match.groups() if match else None


@dataclasses.dataclass
class IrmaConfig(tfds.core.BuilderConfig):
  regions: str = "23459"  # First anatomical characters kept, in label order.


class Irma(LabelledFilesBuilder):
  VERSION = tfds.core.Version("1.0.0")
  DESCRIPTION = "IRMA / ImageCLEFmed 2009 radiographs labelled by body region."
  BUILDER_CONFIGS = [
      IrmaConfig(name="anatomy5", regions="23459",
                 description="The paper's five regions: cranium, spine, upper extremity, "
                             "chest, lower extremity."),
      IrmaConfig(name="anatomy9", regions="123456789", description="All nine body regions."),
      IrmaConfig(name="anatomy3", regions="234",
                 description="Networks E-G's 3 classes (our reading): cranium, spine, upper "
                             "extremity."),
      IrmaConfig(name="anatomy4", regions="2345",
                 description="Networks E-G's 4 classes (our reading): cranium, spine, upper "
                             "extremity, chest."),
  ]
  # split -> (accepted label-file names, image folder)
  SPLITS = {
      "train": (("train_codes_02.csv", "ImageCLEFmed2009_train_codes.02.csv"),
                "ImageCLEFmed2009_train.02"),
      "test": (("test_codes_03.csv", "ImageCLEFmed2009_test_codes.03.csv"),
               "ImageCLEFmed2009_test.03"),
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request the ImageCLEFmed 2009 IRMA images from RWTH Aachen (Deserno & Ott, "15,363 IRMA
images of 193 categories for ImageCLEFmed2009", http://dx.doi.org/10.18154/RWTH-2016-06143;
images are not redistributable) and place in <data_dir>/irma/:
  train_codes_02.csv, test_codes_03.csv   (or ImageCLEFmed2009_{train,test}_codes.0{2,3}.csv)
  ImageCLEFmed2009_train.02/<image_id>.png
  ImageCLEFmed2009_test.03/<image_id>.png
(data_dir = config.data.manual_dir, $MEDJAX_DATA_DIR or ~/medjax_data)."""

  def class_names(self) -> tuple[str, ...]:
    return tuple(REGIONS[r] for r in self.builder_config.regions)

  def _extra_features(self):
    return {name: tfds.features.Text() for name in ("irma_code", *_AXES)}

  def _list(self, root: Path) -> Listing:
    listing = Listing()
    label_of = {r: i for i, r in enumerate(self.builder_config.regions)}
    excluded = {}
    for split, (table_names, folder) in self.SPLITS.items():
      listing.split(split)
      table = first_existing(root, table_names)
      rows = read_rows(table, delimiter=";")
      _, header = next(rows, ("", []))
      if "image_id" not in header or "irma_code" not in header:
        raise ValueError(f"{table}: expected a header with 'image_id' and 'irma_code' "
                         f"(semicolon-separated), found {header}")
      id_col, code_col = header.index("image_id"), header.index("irma_code")
      excluded[split] = 0
      for where, fields in rows:
        if len(fields) <= max(id_col, code_col):
          listing.bad_row(where, f"has {len(fields)} field(s); expected image_id and irma_code")
          continue
        image_id, code = fields[id_col], fields[code_col]
        axes = parse_code(code)
        if not image_id or image_id == r"\N":
          listing.bad_row(where, "has no image_id")
        elif axes is None:
          listing.bad_row(where, f"irma_code {code!r} is not an IRMA code TTTT-DDD-AAA-BBB")
        elif axes[2][0] not in label_of:
          excluded[split] += 1
        else:
          listing.add(split, Entry(
              path=root / folder / f"{image_id}.png", id=image_id, label=label_of[axes[2][0]],
              extra=(("irma_code", "-".join(axes)), *zip(_AXES, axes)), where=where))
    self.info.metadata["excluded"] = excluded
    return listing
