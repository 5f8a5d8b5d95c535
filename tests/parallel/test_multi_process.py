"""Multi-process JAX through launch/local.sh: 2 CPU processes joined by jax.distributed
(gloo collectives) train the system 4 config on the tiny image folder.

The run must equal the single-process one (the input pipeline feeds every process its
rows of the same global batches), and a run whose process is killed must stop as a whole
and resume to the same results. (The same comparison on the real chest X-ray smoke run
is too slow for the suite: ``launch/local.sh 2 -- --config=configs/irma_cnn.py:smoke,
dataset=chest_xray --workdir=W`` against ``python -m medjax.main`` with the same flags.)
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medjax import distributed
from tests.conftest import REPO_ROOT, wait_for


STEPS = 10  # Checkpoints every 2 steps and at epoch ends (5 steps): a kill after step 4
# leaves four saves and the final evaluation to go.


def cli_args(data_dir, tfds_dir, workdir) -> list[str]:
  """The command-line spelling of ``tests.conftest.tiny_config(data_dir, tfds_dir,
  total_steps=STEPS)``."""
  return ["--config=configs/irma_cnn.py:dataset=image_folder,variant=D,image_size=32",
          f"--config.data.manual_dir={data_dir}", f"--config.data.tfds_dir={tfds_dir}",
          "--config.batch_size=8", "--config.eval_batch_size=8", "--config.num_epochs=2",
          "--config.log_every=1", "--config.checkpoint_every_steps=2",
          f"--config.total_steps={STEPS}", f"--workdir={workdir}"]


def launch(nproc, args, **kwargs):
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHON": sys.executable}
  return subprocess.Popen([str(REPO_ROOT / "launch" / "local.sh"), str(nproc), "--", *args],
                          env=env, cwd=REPO_ROOT, text=True, **kwargs)


def run_to_end(nproc, args):
  proc = launch(nproc, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-4000:]
  return out, err


def results(workdir: Path) -> dict:
  return json.loads((workdir / "results.json").read_text())


def train_losses(workdir: Path) -> list[float]:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["train/loss"] for r in rows if "train/loss" in r]


def assert_same_run(got: dict, want: dict):
  """Losses within 1e-4 relative (the issue's criterion) and the same example counts.

  Argmax metrics (accuracy, confusion matrix) are not compared: after 10 steps the tiny
  model sits near a decision tie, where a different float reduction order across
  processes may flip every prediction while the losses agree to 1e-6.
  """
  assert got["config"] == want["config"]
  for key, value in want.items():
    if key.endswith("loss"):
      assert got[key] == pytest.approx(value, rel=1e-4), key
    elif key.endswith(("num_examples", "steps")):
      assert got[key] == value, key


@pytest.fixture(scope="module")
def single(tiny_data_dir, tfds_dir, tmp_path_factory) -> Path:
  """The single-process run, through the same launcher in a fresh process.

  Not in this pytest worker: in a full-suite run the in-process reference once ended at a
  test loss 6e-4 away from both fresh-process runs (1 and 2 processes, which agreed),
  while the file alone passed; state earlier test modules leave in the worker must not
  decide this comparison.
  """
  workdir = tmp_path_factory.mktemp("single")
  run_to_end(1, cli_args(tiny_data_dir, tfds_dir, workdir))
  return workdir


@pytest.mark.slow  # Several JAX processes, one killed, then the run again.
def test_two_processes_match_one_and_a_killed_process_stops_the_run_and_the_rerun_resumes(
    single, tiny_data_dir, tfds_dir, tmp_path):
  """One 2-process run covers both promises: killed after its step-4 checkpoint, it must stop
  as a whole; rerun, it must end where the 1-process run ends, step by step (steps 1-4 come
  from the killed run's metrics, 5-10 from the rerun's)."""
  args = cli_args(tiny_data_dir, tfds_dir, tmp_path)
  proc = launch(2, args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
  wait_for(proc, (tmp_path / "checkpoints" / "4").is_dir, timeout=600)
  (victim,) = [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_process_1(pid, tmp_path)]
  os.kill(int(victim), signal.SIGKILL)
  try:
    assert proc.wait(timeout=120) != 0  # The launcher stopped process 0 and failed.
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert not (tmp_path / "results.json").exists()
  assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_ours(pid, tmp_path)]

  out, err = run_to_end(2, args)
  assert "Resuming from the checkpoint at step" in err
  assert_same_run(results(tmp_path), results(single))
  # Steps after the restored one were replaced: one loss per step, those of one process.
  assert len(train_losses(tmp_path)) == STEPS
  assert train_losses(tmp_path) == pytest.approx(train_losses(single), rel=1e-4)
  # Process 0 alone writes and reports; both were there.
  assert "[p0] test/accuracy" in out and "[p1] test/accuracy" not in out
  assert "[p1]" in err and "2 processes" in err
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [8, 10]


def _cmdline(pid) -> list[str]:
  try:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
  except OSError:  # Gone meanwhile.
    return []


def _is_ours(pid, workdir) -> bool:
  cmd = _cmdline(pid)
  return "medjax.main" in cmd and f"--workdir={workdir}" in cmd


def _is_process_1(pid, workdir) -> bool:
  return _is_ours(pid, workdir) and "--process_id=1" in _cmdline(pid)


def test_settings_come_from_flags_then_environment(monkeypatch):
  env = {"MEDJAX_COORDINATOR": "h:1", "MEDJAX_NUM_PROCESSES": "4", "MEDJAX_PROCESS_ID": "3",
         "MEDJAX_LOCAL_DEVICE_IDS": "0,1"}
  assert distributed.settings(process_id=0, environ=env) == {
      "coordinator_address": "h:1", "num_processes": 4, "process_id": 0, "local_device_ids": [0, 1]}
  assert distributed.settings(environ={}) == {}
  assert distributed.launcher_detected({"SLURM_STEP_NUM_TASKS": "8"})
  assert distributed.launcher_detected({"OMPI_COMM_WORLD_SIZE": "2"})
  assert not distributed.launcher_detected({"SLURM_STEP_NUM_TASKS": "1", "SLURM_JOB_ID": "7"})
  # A plain run stays one process; 'off' refuses contradicting settings.
  for name in [*distributed.ENV.values(), "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE",
               "TPU_WORKER_HOSTNAMES"]:
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize("auto") is False
  with pytest.raises(ValueError, match="process_id"):
    distributed.initialize("off", process_id=1)
