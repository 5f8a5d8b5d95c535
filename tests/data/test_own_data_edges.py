"""A user's own images at their edges: one class, classes missing from a given split, CSV
rows written on Windows, repeated rows, empty labels."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medjax.data import builders, validate
from medjax.data.builders import by_path
from tests.conftest import REPO_ROOT, tiny_config


def png(path: Path, value: int = 90) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((24, 24), value, np.uint8)).save(path)
  return path


def write_csv(path: Path, rows, header=("path", "label")) -> Path:
  with path.open("w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows([header, *rows])
  return path


def test_a_single_class_is_refused_by_name(tmp_path):
  for i in range(6):
    png(tmp_path / "study" / "pneumonia" / f"{i}.png")
  with pytest.raises(by_path.DatasetError, match="only the class 'pneumonia'.*at least two"):
    by_path.ByPath(source=str(tmp_path / "study"), data_dir=str(tmp_path / "tfds"))


@pytest.mark.slow  # A subprocess.
def test_a_single_class_ends_the_command_with_one_line_and_status_2(tmp_path):
  for i in range(6):
    png(tmp_path / "study" / "pneumonia" / f"{i}.png")
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MEDJAX_TFDS_DIR=str(tmp_path / "tfds"))
  out = subprocess.run([sys.executable, "-m", "medjax.describe",
                        f"--dataset={tmp_path / 'study'}"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [line for line in out.stderr.splitlines() if "medjax.describe" in line]
  assert len(lines) == 1 and "only the class 'pneumonia'" in lines[0]
  assert "Traceback" not in out.stderr


def test_given_splits_refuse_a_class_without_training_images_and_warn_of_one_without_tests(
    tmp_path, caplog):
  for split, classes in (("train", ("normal", "tumour", "cyst")), ("test", ("normal", "tumour"))):
    for name in classes:
      for i in range(3):
        png(tmp_path / "study" / split / name / f"{i}.png")
  builder = by_path.ByPath(source=str(tmp_path / "study"), data_dir=str(tmp_path / "tfds"))
  assert builder.class_names() == ("cyst", "normal", "tumour")
  assert "class 'cyst' has no test images" in caplog.text
  png(tmp_path / "study" / "test" / "Normal" / "x.png")  # Spelt otherwise than in train.
  with pytest.raises(by_path.DatasetError, match=r"'Normal' \(in test\) have no training "
                                                 r"images.*\['cyst', 'normal', 'tumour'\]"):
    by_path.ByPath(source=str(tmp_path / "study"), data_dir=str(tmp_path / "tfds"))


def _table(tmp_path, *extra):
  for i in range(4):
    png(tmp_path / "images" / f"a{i}.png", 20)
    png(tmp_path / "images" / f"b{i}.png", 200)
  rows = [(f"images/{c}{i}.png", c) for c in "ab" for i in range(4)]
  return write_csv(tmp_path / "labels.csv", rows + list(extra))


def test_a_windows_path_in_a_csv_is_read_with_slashes(tmp_path):
  png(tmp_path / "more images" / "c0.png", 200)
  table = _table(tmp_path, ("more images\\c0.png", "b"))
  builder = by_path.ByPath(source=str(table), data_dir=str(tmp_path / "tfds"))
  row = next(r for r in builder._rows if r["where"] == "labels.csv:10")
  assert row["path"] == tmp_path / "more images" / "c0.png" and row["id"] == "more images/c0.png"
  assert tmp_path / "more images" / "c0.png" in by_path.listed_files(table)


def test_a_csv_row_repeated_exactly_is_read_once_and_a_conflicting_one_refused(tmp_path, caplog):
  table = _table(tmp_path, ("images/a0.png", "a"))
  builder = builders.get_builder(str(table), tfds_dir=str(tmp_path / "tfds"))
  assert sum(split.num_examples for split in builder.info.splits.values()) == 8
  assert "labels.csv:10 repeats labels.csv:2" in caplog.text
  table = _table(tmp_path, ("images/a0.png", "b"))
  with pytest.raises(validate.BadDataError, match=r"^1 bad file in .*labels.csv: labels.csv:2: "
                                                  r"id 'images/a0.png' is listed 2 times"):
    builders.get_builder(str(table), tfds_dir=str(tmp_path / "tfds2"))


def test_one_missing_file_is_one_line_naming_the_csv_and_its_line(tmp_path, caplog):
  table = _table(tmp_path, ("images/gone.png", "a"), ("images/b0.png", ""))
  with pytest.raises(validate.BadDataError) as error:
    builders.get_builder(str(table), tfds_dir=str(tmp_path / "tfds"))
  assert str(error.value).startswith(f"2 bad file(s) in {table}")
  assert "labels.csv:11: has no label" in str(error.value) and "class ''" not in caplog.text
  table = _table(tmp_path, ("images/gone.png", "a"))
  with pytest.raises(validate.BadDataError) as error:
    builders.get_builder(str(table), tfds_dir=str(tmp_path / "tfds"))
  assert "\n" not in str(error.value)
  assert str(error.value).startswith(f"1 bad file in {table}: ") and \
      "gone.png: is missing (listed at labels.csv:10)" in str(error.value)


def test_a_drawn_split_left_empty_is_left_out_not_a_traceback(tmp_path, caplog):
  """Four images a class: 0.7/0.1/0.2 draws no validation image, and TFDS cannot write an
  empty split (it used to fail with "No examples were yielded")."""
  for name, value in (("a", 20), ("b", 200)):
    for i in range(4):
      png(tmp_path / "study" / name / f"{i}.png", value)
  builder = builders.get_builder(str(tmp_path / "study"), tfds_dir=str(tmp_path / "tfds"))
  assert {s: v.num_examples for s, v in builder.info.splits.items()} == {"train": 6, "test": 2}
  assert "split 'val' of" in caplog.text and "left out" in caplog.text


def test_a_validation_holdout_of_no_image_leaves_the_run_without_val(tmp_path, caplog):
  """Six training images: 10 % per class rounds to none; the pipeline used to declare an
  empty val split and the trainer then died concatenating no batches."""
  from medjax import parallel
  from medjax.data.pipeline import InputPipeline
  for name, value in (("a", 20), ("b", 200)):
    for i in range(4):
      png(tmp_path / "study" / name / f"{i}.png", value)
  config = tiny_config(tmp_path, tmp_path / "tfds")
  config.data.name = str(tmp_path / "study")
  data = InputPipeline(config, tmp_path / "work", parallel.make_mesh())
  assert data.info.split_sizes == {"train": 6, "test": 2} and not data.has_split("val")
  assert "holds out none: no validation set" in caplog.text


def test_skipped_bad_files_are_named_in_the_log_and_in_data_json(tmp_path, caplog):
  import json
  from medjax import parallel
  from medjax.data.pipeline import InputPipeline
  for name, value in (("a", 20), ("b", 200)):
    for i in range(10):
      png(tmp_path / "study" / name / f"{i}.png", value)
  (tmp_path / "study" / "a" / "empty.png").write_bytes(b"")
  good = (tmp_path / "study" / "b" / "0.png").read_bytes()
  (tmp_path / "study" / "b" / "cut.png").write_bytes(good[:len(good) // 2])
  config = tiny_config(tmp_path, tmp_path / "tfds")
  config.data.name, config.data.on_bad_file = str(tmp_path / "study"), "skip"
  InputPipeline(config, tmp_path / "work", parallel.make_mesh())
  recorded = json.loads((tmp_path / "work" / "data.json").read_text())
  assert recorded["skipped"] == ["a/empty.png", "b/cut.png"]
  assert "2 bad file(s) of" in caplog.text and "a/empty.png, b/cut.png" in caplog.text


def test_csv_header_case_encoding_and_empty_path(tmp_path):
  table = _table(tmp_path)
  table.write_text(table.read_text().replace("path,label", "Path,Label", 1))
  assert len(by_path.ByPath(source=str(table), data_dir=str(tmp_path / "tfds"))._rows) == 8
  table.write_bytes(b"path,label\nimages/a0.png,caf\xe9\nimages/b0.png,b\n")  # Latin-1.
  with pytest.raises(by_path.DatasetError, match=r"labels.csv is not UTF-8 text \(byte 0xe9"):
    by_path.ByPath(source=str(table), data_dir=str(tmp_path / "tfds"))
  table = _table(tmp_path, ("", "a"))
  with pytest.raises(by_path.DatasetError, match=r"\(labels.csv:10\): the path is empty"):
    by_path.ByPath(source=str(table), data_dir=str(tmp_path / "tfds"))


def test_split_folders_without_train_are_not_read_as_classes(tmp_path):
  """val/<class>/ and test/<class>/ with no train/ used to become the classes 'test' and
  'val', their class folders read as patients."""
  for split in ("val", "test"):
    for name in ("normal", "tumour"):
      for i in range(3):
        png(tmp_path / "study" / split / name / f"{i}.png")
  with pytest.raises(by_path.DatasetError, match=r"split folder\(s\) \['test', 'val'\] but no "
                                                 r"train folder"):
    by_path.ByPath(source=str(tmp_path / "study"), data_dir=str(tmp_path / "tfds"))
