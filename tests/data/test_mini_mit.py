"""Mini-MIT from the MIT Indoor-67 archive and its official train/test lists."""
import pytest

from medjax.data import validate
from medjax.data.describe import class_counts

from standins import examples, prepare, write_image, write_truncated

CATEGORIES = ("bookstore", "library", "inside_bus")


def _archive(root):
  """80 train-list and 20 test-list images per category, as in MIT Indoor-67, + one other."""
  train, test = [], []
  for category in (*CATEGORIES, "kitchen"):
    for i in range(100):
      write_image(root / "Images" / category / f"{category}_{i:03d}.jpg", seed=i)
      (train if i < 80 else test).append(f"{category}/{category}_{i:03d}.jpg")
  (root / "TrainImages.txt").write_text("\n".join(train) + "\n")
  (root / "TestImages.txt").write_text("\r\n".join(test) + "\r\n")


def test_forty_per_class_per_split_from_the_official_lists(tmp_path):
  _archive(tmp_path / "data" / "mini_mit")
  builder = prepare("mini_mit", tmp_path / "data", tmp_path / "tfds")
  assert class_counts(builder, "train") == {c: 40 for c in CATEGORIES}
  assert class_counts(builder, "test") == {c: 40 for c in CATEGORIES}
  train, test = examples(builder, "train"), examples(builder, "test")
  assert not set(train) & set(test)
  assert "library/library_039.jpg" in train and "library/library_040.jpg" not in train
  # The 20 official test images, then train-list entries 41-60.
  assert {f"bookstore/bookstore_{i:03d}.jpg" for i in (*range(80, 100), *range(40, 60))} == \
      {k for k in test if k.startswith("bookstore/")}


def _bad(root):
  _archive(root)
  write_truncated(root / "Images" / "library" / "library_000.jpg")
  (root / "Images" / "bookstore" / "bookstore_001.jpg").unlink()
  lines = (root / "TrainImages.txt").read_text().splitlines()
  (root / "TrainImages.txt").write_text("\n".join(["inside_bus_no_folder.jpg", *lines]) + "\n")


def test_bad_lines_and_files_are_named_in_one_error(tmp_path):
  _bad(tmp_path / "data" / "mini_mit")
  with pytest.raises(validate.BadDataError) as error:
    prepare("mini_mit", tmp_path / "data", tmp_path / "tfds")
  message = str(error.value)
  assert message.startswith("3 bad file(s)")
  for fragment in ("TrainImages.txt:1: expected '<category>/<file>'",
                   "bookstore_001.jpg: is missing (listed at TrainImages.txt:3)",
                   "library_000.jpg: is not a readable image"):
    assert fragment in message


def test_bad_lines_and_files_are_skipped_and_counted(tmp_path):
  _bad(tmp_path / "data" / "mini_mit")
  builder = prepare("mini_mit", tmp_path / "data", tmp_path / "tfds", on_bad_file="skip")
  assert builder.info.metadata["skipped"] == [
      "Images/bookstore/bookstore_001.jpg", "Images/library/library_000.jpg",
      "TrainImages.txt:1"]
  assert class_counts(builder, "train") == {"bookstore": 39, "library": 39, "inside_bus": 40}
