"""ImageCLEFmed 2016 subfigures: the 30 codes, both test-set layouts, and bad inputs."""
import pytest

from medjax.data import validate
from medjax.data.builders.imageclef2016 import CODES

from standins import examples, prepare, write_image, write_truncated

TRAIN = "SubfigureClassificationTraining2016"
TEST = "SubfigureClassificationTest2016"


def _training(root):
  for code in ("DMEL", "GFIG", "DRCT"):
    for i in range(2):
      write_image(root / TRAIN / code / f"1471-{code}-{i}.jpg", size=32, seed=i)
  (root / TRAIN / "GFIG" / ".DS_Store").write_bytes(b"\0\1")


def test_the_thirty_official_codes():
  assert len(set(CODES)) == 30 and list(CODES) == sorted(CODES)
  assert {"DRUS", "DRMR", "DRCT", "DRXR", "DRAN", "DRPE", "DRCO", "DVDM", "DVEN", "DVOR",
          "DSEE", "DSEC", "DSEM", "DMLI", "DMEL", "DMTR", "DMFL", "D3DR"} < set(CODES)
  assert "COMP" not in CODES


def test_flat_test_set_with_ground_truth_file(tmp_path):
  root = tmp_path / "data" / "imageclef2016"
  _training(root)
  for name in ("x-1", "x-2"):
    write_image(root / TEST / f"{name}.jpg", size=32)
  (root / "SubfigureClassificationTest2016GT.txt").write_text("x-1 GFIG\nx-2 DMEL\n")
  builder = prepare("imageclef2016", tmp_path / "data", tmp_path / "tfds")
  train = examples(builder, "train")
  assert len(train) == 6
  assert train[f"{TRAIN}/DRCT/1471-DRCT-0.jpg"] == CODES.index("DRCT")
  assert examples(builder, "test") == {f"{TEST}/x-1.jpg": CODES.index("GFIG"),
                                       f"{TEST}/x-2.jpg": CODES.index("DMEL")}


def test_test_set_as_class_folders(tmp_path):
  root = tmp_path / "data" / "imageclef2016"
  _training(root)
  write_image(root / TEST / "GTAB" / "y-1.jpg", size=32)
  builder = prepare("imageclef2016", tmp_path / "data", tmp_path / "tfds")
  assert examples(builder, "test") == {f"{TEST}/GTAB/y-1.jpg": CODES.index("GTAB")}


def _bad_archive(root):
  _training(root)
  write_truncated(root / TRAIN / "DMEL" / "broken.jpg")
  write_image(root / TEST / "x-1.jpg", size=32)
  (root / "SubfigureClassificationTest2016GT.txt").write_text(
      "x-1 GFIG\n"
      "x-3 XRAY\n"   # not a code
      "x-4 DRCT\n")  # no such image


def test_bad_rows_and_files_are_named_in_one_error(tmp_path):
  _bad_archive(tmp_path / "data" / "imageclef2016")
  with pytest.raises(validate.BadDataError) as error:
    prepare("imageclef2016", tmp_path / "data", tmp_path / "tfds")
  message = str(error.value)
  assert message.startswith("3 bad file(s)")
  for fragment in ("broken.jpg: is not a readable image",
                   "SubfigureClassificationTest2016GT.txt:2: expected '<image name> <CODE>'",
                   "x-4: is missing (listed at SubfigureClassificationTest2016GT.txt:3)"):
    assert fragment in message


def test_bad_rows_and_files_are_skipped_and_counted(tmp_path):
  _bad_archive(tmp_path / "data" / "imageclef2016")
  builder = prepare("imageclef2016", tmp_path / "data", tmp_path / "tfds", on_bad_file="skip")
  assert len(builder.info.metadata["skipped"]) == 3
  assert builder.info.splits["train"].num_examples == 6
  assert builder.info.splits["test"].num_examples == 1
