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

from medjax.data import builders
from medjax.data.builders import by_path
from tests.conftest import REPO_ROOT


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
