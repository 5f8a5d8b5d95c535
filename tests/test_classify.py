"""The classify command ranks the ImageNet samples as the published EfficientNet-Lite0 does."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medjax import classify, cli


REPO = Path(__file__).resolve().parents[1]
# image -> (top-1 label, published top-1 probability)
EXPECTED = {"cat.bmp": ("Egyptian cat", 0.44), "grace_hopper.bmp": ("military uniform", 0.44),
            "parrot.jpg": ("macaw", 0.85)}


@pytest.fixture(scope="module")
def samples() -> Path:
  env = os.environ.get("MEDJAX_DATA_DIR")
  root = Path(env) if env else REPO / ".." / "shared" / "data"
  folder = root / "imagenet_samples"
  if not all((folder / name).is_file() for name in EXPECTED):
    pytest.skip(f"ImageNet samples not found in {folder} (they live in ../shared/data or "
                f"$MEDJAX_DATA_DIR)")
  return folder


def test_ships_the_imagenet_classes():
  classes = classify.imagenet_classes()
  assert len(classes) == 1000
  assert classes[0] == "tench, Tinca tinca" and classes[285] == "Egyptian cat"


@pytest.mark.slow  # The CLI in a subprocess on the real sample photos.
def test_efficientnet_lite0_command_ranks_samples(samples):
  images = [str(samples / name) for name in EXPECTED]
  result = subprocess.run(
      [sys.executable, "-m", "medjax.classify", "--backbone=efficientnet_lite0", *images],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
  lines = [line.split("\t") for line in result.stdout.splitlines()]
  assert len(lines) == 5 * len(images) and all(len(parts) == 3 for parts in lines)
  for i, (image, (label, prob)) in enumerate(zip(images, EXPECTED.values())):
    top = lines[5 * i]
    assert top[0] == image and top[1] == label
    assert abs(float(top[2]) - prob) < 0.01, (image, top)
    probs = [float(parts[2]) for parts in lines[5 * i:5 * i + 5]]
    assert probs == sorted(probs, reverse=True)


def test_missing_or_unreadable_image_is_a_user_error(tmp_path):
  with pytest.raises(cli.UserError, match="does not exist"):
    classify._open(tmp_path / "missing.png")
  (tmp_path / "notes.png").write_text("not an image")
  with pytest.raises(cli.UserError, match="not an image"):
    classify._open(tmp_path / "notes.png")
