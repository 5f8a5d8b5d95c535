"""ImageCLEF 2015 clustering: 4-hot labels from the ground-truth files, and bad inputs."""
import pytest

from medjax.data import validate
from medjax.data.describe import class_counts

from standins import examples, prepare, write_image, write_truncated


def _archive(root):
  for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
    write_image(root / "train" / name, size=32)
  (root / "train.txt").write_text(
      "a.jpg Body,Head-Neck\n"
      "b TrueNegative\n"              # suffix omitted; true negative
      "c.jpg\t0\t0\t1\t1\n"           # four 0/1 flags
      "\n"
      "d.jpg upper_limb;lower-limb\n"
      "e.jpg\n")                      # no label: true negative
  write_image(root / "test" / "t1.jpg", size=32)
  (root / "test.txt").write_text("t1.jpg Lower-Limb\n")


def test_labels_are_four_hot(tmp_path):
  _archive(tmp_path / "data" / "imageclef2015")
  builder = prepare("imageclef2015", tmp_path / "data", tmp_path / "tfds")
  assert builder.class_names() == ("Body", "Head-Neck", "Upper-Limb", "Lower-Limb")
  assert examples(builder, "train", "labels") == {
      "train/a.jpg": [1, 1, 0, 0], "train/b.jpg": [0, 0, 0, 0], "train/c.jpg": [0, 0, 1, 1],
      "train/d.jpg": [0, 0, 1, 1], "train/e.jpg": [0, 0, 0, 0]}
  assert class_counts(builder, "test") == {"Body": 0, "Head-Neck": 0, "Upper-Limb": 0,
                                           "Lower-Limb": 1, "(none)": 0}


def _add_bad(root):
  write_truncated(root / "train" / "f.jpg")
  with (root / "train.txt").open("a") as f:
    f.write("f.jpg Body\n"               # truncated image
            "a2.jpg Torso\n"             # unknown label
            "g.jpg Body TrueNegative\n"  # contradictory
            "missing.jpg Head-Neck\n")   # no such file


def test_bad_rows_and_files_are_named_in_one_error(tmp_path):
  root = tmp_path / "data" / "imageclef2015"
  _archive(root)
  _add_bad(root)
  with pytest.raises(validate.BadDataError) as error:
    prepare("imageclef2015", tmp_path / "data", tmp_path / "tfds")
  message = str(error.value)
  assert message.startswith("4 bad file(s)")
  for fragment in ("f.jpg: is not a readable image", "train.txt:8: label 'Torso'",
                   "train.txt:9: is marked TrueNegative", "missing.jpg: is missing (listed at "
                   "train.txt:10)"):
    assert fragment in message


def test_bad_rows_and_files_are_skipped_and_counted(tmp_path):
  root = tmp_path / "data" / "imageclef2015"
  _archive(root)
  _add_bad(root)
  builder = prepare("imageclef2015", tmp_path / "data", tmp_path / "tfds", on_bad_file="skip")
  assert builder.info.metadata["skipped"] == sorted(
      ["train.txt:8", "train.txt:9", "train/f.jpg", "train/missing.jpg"])
  assert builder.info.splits["train"].num_examples == 5
