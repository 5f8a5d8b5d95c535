"""Kvasir: the 8 class folders and the deterministic stratified 80/20 split."""
import pytest

from medjax.data import validate
from medjax.data.builders.kvasir import Kvasir
from medjax.data.describe import class_counts

from standins import examples, prepare, write_image, write_truncated


def _archive(root, folder="kvasir-dataset-v2", per_class=5):
  for label, name in enumerate(Kvasir.CLASS_NAMES):
    for i in range(per_class):
      write_image(root / folder / name / f"{label:02d}{i:03d}-img.jpg", size=24, seed=i)
  (root / folder / "polyps" / ".DS_Store").write_bytes(b"\0")


def test_stratified_split_is_deterministic(tmp_path):
  _archive(tmp_path / "a" / "kvasir")
  _archive(tmp_path / "b" / "kvasir", folder="kvasir-dataset")  # v1 folder name
  first = prepare("kvasir", tmp_path / "a", tmp_path / "tfds_a")
  again = prepare("kvasir", tmp_path / "b", tmp_path / "tfds_b")
  assert class_counts(first, "train") == {n: 4 for n in Kvasir.CLASS_NAMES}
  assert class_counts(first, "test") == {n: 1 for n in Kvasir.CLASS_NAMES}
  names = lambda b, split: sorted(k.split("/", 1)[1] for k in examples(b, split))
  assert names(first, "test") == names(again, "test")


def test_corrupt_images_are_named_or_skipped(tmp_path):
  root = tmp_path / "data" / "kvasir"
  _archive(root)
  write_truncated(root / "kvasir-dataset-v2" / "esophagitis" / "cut.jpg")
  (root / "kvasir-dataset-v2" / "normal-cecum" / "empty.jpg").write_bytes(b"")
  with pytest.raises(validate.BadDataError) as error:
    prepare("kvasir", tmp_path / "data", tmp_path / "tfds")
  assert "cut.jpg: is not a readable image" in str(error.value)
  assert "empty.jpg: is empty" in str(error.value)

  builder = prepare("kvasir", tmp_path / "data", tmp_path / "tfds", on_bad_file="skip")
  assert builder.info.metadata["skipped"] == [
      "kvasir-dataset-v2/esophagitis/cut.jpg", "kvasir-dataset-v2/normal-cecum/empty.jpg"]
  total = sum(builder.info.splits[s].num_examples for s in ("train", "test"))
  assert total == 8 * 5


def test_unknown_class_folder_is_an_error(tmp_path):
  root = tmp_path / "data" / "kvasir"
  _archive(root, per_class=1)
  write_image(root / "kvasir-dataset-v2" / "hemorrhoids" / "x.jpg")
  with pytest.raises(ValueError, match="hemorrhoids"):
    prepare("kvasir", tmp_path / "data", tmp_path / "tfds")
