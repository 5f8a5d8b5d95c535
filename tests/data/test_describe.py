"""``python -m medjax.describe``: JSON counts users check before a long run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from standins import write_image, write_truncated

from medjax.describe import describe_dataset

REPO = Path(__file__).resolve().parents[2]


def describe(*args: str) -> dict:
  """Runs the command as a user would; stdout must be the JSON alone."""
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  done = subprocess.run([sys.executable, "-m", "medjax.describe", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout)


@pytest.mark.slow
def test_chest_xray_counts(shared_data, tmp_path):
  out = describe("--dataset=chest_xray", f"--data_dir={shared_data}", f"--tfds_dir={tmp_path}")
  assert {s: v["per_class"] for s, v in out["splits"].items()} == {
      "train": {"NORMAL": 1341, "PNEUMONIA": 3875},
      "val": {"NORMAL": 8, "PNEUMONIA": 8},
      "test": {"NORMAL": 234, "PNEUMONIA": 390}}
  assert out["splits"]["train"]["examples"] == 5216
  assert out["image_kinds"] == {"rgb": 5856}
  assert out["skipped"] == 0


@pytest.mark.parametrize("how", ["in_process", pytest.param("cli", marks=pytest.mark.slow)])
def test_multi_label_counts_and_skipped_files(tmp_path, how):
  root = tmp_path / "data" / "imageclef2015"
  for name in ("a.png", "b.png", "c.png"):
    write_image(root / "train" / name, size=32)
  write_image(root / "test" / "t.png", size=32, mode="RGB")
  write_truncated(root / "train" / "bad.png")
  (root / "train.txt").write_text("a.png Body Head-Neck\nb.png Body\nc.png\nbad.png Body\n")
  (root / "test.txt").write_text("t.png TrueNegative\n")
  if how == "cli":
    out = describe("--dataset=imageclef2015", f"--data_dir={tmp_path / 'data'}",
                   f"--tfds_dir={tmp_path / 'tfds'}", "--on_bad_file=skip")
  else:
    # The function the command's main prints, in this process (no interpreter start-up and
    # TensorFlow import of its own); the JSON round trip is the CLI's stdout.
    out = json.loads(json.dumps(describe_dataset(
        "imageclef2015", str(tmp_path / "data"), str(tmp_path / "tfds"), "skip")))
  assert out["splits"]["train"] == {
      "examples": 3,
      "per_class": {"Body": 2, "Head-Neck": 1, "Upper-Limb": 0, "Lower-Limb": 0, "(none)": 1}}
  assert out["image_kinds"] == {"grayscale": 3, "rgb": 1}
  assert (out["skipped"], out["skipped_files"]) == (1, ["train/bad.png"])
