"""Data parallelism: 4 simulated CPU devices follow the same loss trajectory as 1."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # Fresh interpreters with simulated devices.


SCRIPT = """
import json, sys
from pathlib import Path
import jax
from tests.conftest import tiny_config
from medjax.train import trainer

data_dir, tfds_dir, workdir = map(Path, sys.argv[1:4])
config = tiny_config(data_dir, tfds_dir, total_steps=5)
results = trainer.train_and_evaluate(config, workdir)
rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
print(json.dumps({"devices": jax.device_count(),
                  "losses": [r["train/loss"] for r in rows if "train/loss" in r],
                  "test_loss": results["test/loss"], "val_accuracy": results["val/accuracy"]}))
"""


def run(devices: int, data_dir, tfds_dir, workdir) -> dict:
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "PYTHONPATH": str(REPO_ROOT)}
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(data_dir), str(tfds_dir), str(workdir)],
                       env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_devices_match_one(tiny_data_dir, tfds_dir, tmp_path):
  one = run(1, tiny_data_dir, tfds_dir, tmp_path / "one")
  four = run(4, tiny_data_dir, tfds_dir, tmp_path / "four")
  assert (one["devices"], four["devices"]) == (1, 4)
  assert len(one["losses"]) == 5
  assert four["losses"] == pytest.approx(one["losses"], rel=1e-4)
  assert four["test_loss"] == pytest.approx(one["test_loss"], rel=1e-4)
  assert four["val_accuracy"] == one["val_accuracy"]
