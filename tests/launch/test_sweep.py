"""Config sweeps: expanding a config's sweep(), the launch commands, and a local run of a
reduced system 4 sweep (2 points, tiny image folder) ending in the summary table."""
import csv
import json
import shlex
import subprocess
import sys

import pytest

from launch import sweep
from tests.conftest import REPO_ROOT



def test_the_three_systems_sweeps_expand_to_named_points():
  _, base, points = sweep.load_points(str(REPO_ROOT / "configs/irma_cnn.py") + ":smoke")
  assert base == "smoke" and len(points) == 7 * 2 * 2
  assert points[0].name == "variant-A_dropout-true_augment-true"
  assert points[0].params == {"variant": "A", "dropout": "true", "augment": "true"}
  _, _, cae = sweep.load_points(str(REPO_ROOT / "configs/cae_imageclef16.py"))
  assert [p.name for p in cae] == ["filters-512", "filters-1024", "filters-2048", "filters-4096"]
  _, _, vlad = sweep.load_points(str(REPO_ROOT / "configs/vlad.py"), "k=256")
  assert [p.params["scale"] for p in vlad] == ["224", "544", "864"]


def test_dict_points_become_config_flags(tmp_path):
  config = tmp_path / "cfg.py"
  config.write_text("def sweep():\n  return [{'optimizer.learning_rate': 0.1, 'seed': 2}]\n")
  path, base, (point,) = sweep.load_points(str(config))
  assert point.name == "optimizer.learning_rate-0.1_seed-2"
  args = sweep.main_args(path, base, point, "ROOT", ["--config.log_every=1"])
  assert args == [f"--config={config}", "--workdir=ROOT/optimizer.learning_rate-0.1_seed-2",
                  "--config.optimizer.learning_rate=0.1", "--config.seed=2",
                  "--config.log_every=1"]


def run_sweep(*args):
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # The sweep CLI in a subprocess.
def test_print_gives_one_launch_command_per_point(tmp_path):
  out = run_sweep("--config=configs/irma_cnn.py:smoke", f"--workdir={tmp_path}", "--run=print",
                  "--launcher=slurm_gpu", "--launcher_args=--nodes=2 --gpus_per_node=4",
                  "--filter=variant=B,dropout=false", "--", "--config.seed=1")
  assert out.returncode == 0, out.stderr
  cmds = [shlex.split(line) for line in out.stdout.splitlines()]
  assert [c[3] for c in cmds] == ["--job_name=variant-B_dropout-false_augment-true",
                                  "--job_name=variant-B_dropout-false_augment-false"]
  assert cmds[1] == [str(REPO_ROOT / "launch/slurm_gpu.sh"), "--nodes=2", "--gpus_per_node=4",
                     "--job_name=variant-B_dropout-false_augment-false", "--",
                     "--config=configs/irma_cnn.py:smoke,variant=B,dropout=false,augment=false",
                     f"--workdir={tmp_path}/variant-B_dropout-false_augment-false",
                     "--config.seed=1"]


@pytest.mark.slow  # A sweep of real runs in subprocesses.
def test_local_sweep_writes_one_summary_row_per_point(tiny_data_dir, tfds_dir, tmp_path):
  root = tmp_path / "sweep"
  out = run_sweep(
      "--config=configs/irma_cnn.py:smoke,dataset=image_folder,image_size=32", f"--workdir={root}",
      "--filter=variant=D,dropout=(true|false),augment=false", "--",
      f"--config.data.manual_dir={tiny_data_dir}", f"--config.data.tfds_dir={tfds_dir}",
      # The smoke slices ask for more images than the tiny folder has.
      "--config.data.train_split=train", "--config.data.test_split=test",
      "--config.batch_size=8", "--config.eval_batch_size=8", "--config.total_steps=4")
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  names = ["variant-D_dropout-true_augment-false", "variant-D_dropout-false_augment-false"]
  rows = list(csv.DictReader((root / "summary.csv").open()))
  assert [r["point"] for r in rows] == names
  assert [r["dropout"] for r in rows] == ["true", "false"]
  for row, name in zip(rows, names):
    results = json.loads((root / name / "results.json").read_text())
    assert row["status"] == "done" and results["train/steps"] == 4
    assert float(row["test/accuracy"]) == results["test/accuracy"]
    assert float(row["retrieval/mAP"]) == results["retrieval/mAP"]
  md = (root / "summary.md").read_text().splitlines()
  assert md[0].startswith("| point | variant | dropout | augment | status |")
  assert "val/accuracy" in md[0] and len(md) == 2 + len(names)
  assert all(f"| {name} |" in line for name, line in zip(names, md[2:]))
