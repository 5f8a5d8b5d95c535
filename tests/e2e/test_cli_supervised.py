"""The real CLI on real data: the system 4 smoke run, killed halfway and resumed.

Checks the foundation's promise: ``python -m medjax.main --config=configs/irma_cnn.py:smoke,
dataset=chest_xray,variant=C`` writes metrics.jsonl, results.json and checkpoints, and a run
killed with SIGKILL then rerun ends with the same results as an uninterrupted one. The
uninterrupted run keeps freed host memory (``--retain_host_memory --nohuge_pages``), the
killed and resumed one runs on huge pages (the default); host memory policies must change
nothing but speed.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.compare import assert_tree_close
from tests.conftest import REPO_ROOT, sigkill_when

pytestmark = pytest.mark.slow  # The real CLI in subprocesses on real data, killed and resumed.

CONFIG = "configs/irma_cnn.py:smoke,dataset=chest_xray,variant=C"


def command(workdir):
  # Retrieval is off: its index and metrics are tested on their own (tests/retrieval) and
  # add nothing to what a kill can break here.
  return [sys.executable, "-m", "medjax.main", f"--config={CONFIG}", f"--workdir={workdir}",
          "--config.retrieval=False"]


def env(shared_data, tfds_dir):
  return {**os.environ, "MEDJAX_DATA_DIR": str(shared_data), "MEDJAX_TFDS_DIR": str(tfds_dir),
          "PYTHONPATH": str(REPO_ROOT)}


def metrics(workdir):
  """A run's results.json less what names the run itself (its command holds its workdir)."""
  results = json.loads((workdir / "results.json").read_text())
  return {k: v for k, v in results.items() if k not in ("command", "config", "environment")}


def test_smoke_run_killed_and_resumed_matches_uninterrupted(shared_data, tfds_dir, tmp_path):
  e = env(shared_data, tfds_dir)
  full = subprocess.run(command(tmp_path / "full") + ["--retain_host_memory", "--nohuge_pages"], env=e,
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
  assert full.returncode == 0, full.stderr[-3000:]
  assert "test/accuracy" in full.stdout
  for name in ("metrics.jsonl", "results.json", "checkpoints"):
    assert (tmp_path / "full" / name).exists(), name
  steps = [json.loads(line)["step"] for line in
           (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(steps) and steps[-1] == 12
  # The clinical evaluation: predictions, intervals, plots and the report.
  results = json.loads((tmp_path / "full" / "results.json").read_text())
  assert results["command"].endswith(
      f"--workdir={tmp_path / 'full'} --config.retrieval=False --retain_host_memory --nohuge_pages")
  assert results["environment"]["host_memory"] == "retain"
  for key in ("accuracy", "roc_auc", "sensitivity/PNEUMONIA", "specificity/PNEUMONIA"):
    assert results[f"test/{key}/ci95_low"] <= results[f"test/{key}"] <= results[
        f"test/{key}/ci95_high"], key
  rows = (tmp_path / "full" / "predictions" / "test.csv").read_text().splitlines()
  assert rows[0] == "id,label,predicted,score/NORMAL,score/PNEUMONIA"
  assert len(rows) == 1 + results["test/num_examples"]
  assert (tmp_path / "full" / "plots" / "test_roc.png").is_file()
  assert "data:image/png;base64," in (tmp_path / "full" / "report.html").read_text()

  killed_dir = tmp_path / "killed"
  sigkill_when(command(killed_dir), e, (killed_dir / "checkpoints" / "4").is_dir, timeout=600)
  assert not (killed_dir / "results.json").exists()

  resumed = subprocess.run(command(killed_dir), env=e, cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming from the checkpoint at step" in resumed.stderr
  assert_tree_close(metrics(killed_dir), metrics(tmp_path / "full"), rel=1e-6, abs_=1e-12)
  from medjax import host_memory
  if host_memory.huge_pages_possible():  # The default re-executed the command on huge pages.
    environment = json.loads((killed_dir / "results.json").read_text())["environment"]
    assert environment["host_memory"] == "huge_pages"
