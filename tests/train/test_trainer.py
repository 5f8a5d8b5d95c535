"""The supervised trainer end to end on a tiny image folder (flax-examples style)."""
import hashlib
import json
import platform
import shutil
import subprocess
import sys

import flax
import jax
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from medjax import cli, optim
from medjax.train import trainer
from tests.compare import assert_tree_close
from tests.conftest import REPO_ROOT, TINY_TASK, tiny_config


def read_jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def metrics_of(results):
  return {k: v for k, v in results.items() if k not in ("config", "command")}


def test_one_step_writes_the_three_outputs(tiny_data_dir, tfds_dir, tmp_path):
  config = tiny_config(tiny_data_dir, tfds_dir, total_steps=1)
  results = trainer.train_and_evaluate(config, tmp_path)
  assert (tmp_path / "checkpoints" / "1").is_dir()
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  assert rows[0]["step"] == 1 and "train/loss" in rows[0]
  stored = json.loads((tmp_path / "results.json").read_text())
  assert stored["test/num_examples"] == 16 and stored["val/num_examples"] == 4
  assert 0.0 <= stored["test/accuracy"] <= 1.0
  assert stored["config"]["model"]["variant"] == "D"
  assert_tree_close(metrics_of(stored), metrics_of(results), rel=0.0, abs_=0.0)  # JSON round trip.
  # What produced the numbers: the installed versions and the lock they came from.
  env = stored["environment"]
  assert env["packages"]["jax"] == jax.__version__ and env["packages"]["flax"] == flax.__version__
  assert env["lock_sha256"] == hashlib.sha256((REPO_ROOT / "requirements.lock").read_bytes()).hexdigest()
  assert env["python"] == platform.python_version() and env["devices"] == jax.device_count()
  assert env["cpu"]["model"] and env["cpu"]["cores"] >= 1
  # Retrieval: the train split indexed, test queries scored, the PR curve drawn.
  assert 0.0 < stored["retrieval/mAP"] <= 1.0 and stored["retrieval/num_queries"] == 16
  # 22 + 22 train, balanced: a random ranking's expected AP with R = 22 of N = 44.
  assert stored["retrieval/random_mAP"] == pytest.approx(0.5392, abs=1e-4)
  assert (tmp_path / "retrieval" / "index.json").exists()
  assert stored["retrieval/P@10/ci95_low"] <= stored["retrieval/P@10"]
  assert (tmp_path / "plots" / "pr_curve.png").exists()


@pytest.mark.slow
def test_learns_the_tiny_task_and_finished_run_is_not_redone(tiny_data_dir, tfds_dir, tmp_path):
  config = tiny_config(tiny_data_dir, tfds_dir, **TINY_TASK)
  results = trainer.train_and_evaluate(config, tmp_path)
  assert results["test/accuracy"] >= 0.9, results
  assert results["retrieval/mAP"] > results["retrieval/random_mAP"] + 0.2
  retrieve = subprocess.run(
      [sys.executable, "-m", "medjax.retrieve", f"--workdir={tmp_path}", "--k=3",
       str(tiny_data_dir / "image_folder" / "test" / "blob" / "blob_000.png")],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
  assert retrieve.returncode == 0, retrieve.stderr[-2000:]
  neighbours = [line.split("\t") for line in retrieve.stdout.splitlines() if line[0].isdigit()]
  assert [n[0] for n in neighbours] == ["1", "2", "3"]
  assert all(n[2] == "blob" for n in neighbours)
  assert [float(n[3]) for n in neighbours] == sorted(float(n[3]) for n in neighbours)
  before = (tmp_path / "metrics.jsonl").read_text()
  again = trainer.train_and_evaluate(config, tmp_path)
  assert again == json.loads((tmp_path / "results.json").read_text())
  assert (tmp_path / "metrics.jsonl").read_text() == before
  config.seed = 1  # A different config in a finished workdir is refused, naming the key.
  with pytest.raises(cli.UserError, match="seed"):
    trainer.train_and_evaluate(config, tmp_path)


@pytest.mark.slow
def test_resume_reaches_the_same_parameters_and_metrics(tiny_data_dir, tfds_dir, tmp_path):
  full = tiny_config(tiny_data_dir, tfds_dir, total_steps=7)
  uninterrupted = trainer.train_and_evaluate(full, tmp_path / "a")
  # A run that stopped after the checkpoint at step 4 (as if killed before finishing).
  trainer.train_and_evaluate(tiny_config(tiny_data_dir, tfds_dir, total_steps=4), tmp_path / "b")
  (tmp_path / "b" / "results.json").unlink()
  shutil.rmtree(tmp_path / "b" / "best_checkpoint")
  resumed = trainer.train_and_evaluate(full, tmp_path / "b")
  assert metrics_of(resumed) == metrics_of(uninterrupted)
  rows = read_jsonl(tmp_path / "b" / "metrics.jsonl")
  assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 8))
  losses_a = [r["train/loss"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "train/loss" in r]
  losses_b = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses_a == losses_b


@pytest.mark.slow
def test_steps_per_call_ends_calls_at_logs_saves_and_epochs(tiny_data_dir, tfds_dir, tmp_path):
  """Four steps per call give one step per call's metrics, logs and checkpoints."""
  runs = {}
  for steps in (1, 4):
    config = tiny_config(tiny_data_dir, tfds_dir, total_steps=11, steps_per_call=steps,
                         log_every=3, checkpoint_every_steps=5, num_epochs=0)
    runs[steps] = trainer.train_and_evaluate(config, tmp_path / str(steps))
  assert_tree_close(metrics_of(runs[4]), metrics_of(runs[1]), rel=1e-4, abs_=1e-6)
  logged = {}
  for steps in (1, 4):
    rows = read_jsonl(tmp_path / str(steps) / "metrics.jsonl")
    logged[steps] = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    saved = sorted(int(p.name) for p in (tmp_path / str(steps) / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert saved[-1] == 11
  # Logged at every 3rd step, every save (5th) and every epoch end, however steps are called.
  assert {3, 5, 6, 9, 10, 11} <= set(logged[4])
  assert list(logged[4]) == list(logged[1])
  assert list(logged[4].values()) == pytest.approx(list(logged[1].values()), rel=1e-5)


def test_steps_to_boundary():
  assert trainer._steps_to_boundary(0, (7, 50, 500), 1000) == 7
  assert trainer._steps_to_boundary(5, (7, 50, 500), 1000) == 2
  assert trainer._steps_to_boundary(7, (7, 50, 500), 1000) == 7
  assert trainer._steps_to_boundary(48, (100, 50, 500), 1000) == 2
  assert trainer._steps_to_boundary(998, (7, 50, 500), 1000) == 2


@pytest.mark.slow
def test_divergence_stops_with_a_clear_message_and_keeps_the_good_checkpoint(
    tiny_data_dir, tfds_dir, tmp_path):
  config = tiny_config(tiny_data_dir, tfds_dir, total_steps=3)
  trainer.train_and_evaluate(config, tmp_path)
  (tmp_path / "results.json").unlink()
  config = tiny_config(tiny_data_dir, tfds_dir, total_steps=8,
                       **{"optimizer.learning_rate": float("inf")})
  with pytest.raises(FloatingPointError, match="last good checkpoint \\(step 3\\)"):
    trainer.train_and_evaluate(config, tmp_path)
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved[-1] == 3


@pytest.mark.slow
def test_early_stopping_restores_the_best_parameters(tiny_data_dir, tfds_dir, tmp_path):
  config = tiny_config(tiny_data_dir, tfds_dir, num_epochs=30,
                       **{"early_stopping.patience_epochs": 2, "optimizer.learning_rate": 0.0})
  results = trainer.train_and_evaluate(config, tmp_path)
  # With a zero learning rate nothing improves after epoch 1: stop at epoch 1 + 2.
  assert results["train/epochs"] == 3
  assert (tmp_path / "best_checkpoint" / "5").is_dir()


def sgd_cfg(**kw):
  base = dict(learning_rate=1.0, momentum=0.0, nesterov=False, weight_decay=0.0,
              schedule="constant", step_epochs=2, step_gamma=0.1, plateau_factor=0.1,
              plateau_patience=1, plateau_rtol=1e-4, plateau_min_scale=1e-6)
  return ConfigDict({**base, **kw})


def test_step_schedule_and_weight_decay_on_kernels_only():
  cfg = sgd_cfg(schedule="step", weight_decay=0.5)
  tx = optim.make(cfg, steps_per_epoch=3)
  params = {"kernel": np.ones((2, 2), np.float32), "bias": np.ones((2,), np.float32)}
  state = tx.init(params)
  zeros = {k: np.zeros_like(v) for k, v in params.items()}
  updates, state = tx.update(zeros, state, params, value=0.0)
  np.testing.assert_allclose(updates["kernel"], -0.5)  # lr 1 * wd 0.5 * w 1.
  np.testing.assert_allclose(updates["bias"], 0.0)
  lrs = [float(optim.learning_rate_schedule(cfg, 3)(s)) for s in (0, 5, 6, 12)]
  np.testing.assert_allclose(lrs, [1.0, 1.0, 0.1, 0.01], rtol=1e-6)


def test_plateau_anneals_by_ten_after_a_stalled_epoch():
  cfg = sgd_cfg(schedule="plateau")
  tx = optim.make(cfg, steps_per_epoch=2)
  params = {"w": np.ones((3,), np.float32)}
  state = tx.init(params)
  grads = {"w": np.ones((3,), np.float32)}
  scales = []
  # Epoch losses 1, 0.5 (improves), 0.5, 0.5 (stalled: patience 1 epoch each time).
  for loss in [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]:
    _, state = tx.update(grads, state, params, value=loss)
    scales.append(float(optim.current_learning_rate(cfg, 2, state, 0)))
  assert scales[1::2] == pytest.approx([1.0, 1.0, 0.1, 0.01])


def test_unknown_schedule_is_named():
  with pytest.raises(ValueError, match="schedule='cosine'"):
    optim.make(sgd_cfg(schedule="cosine"), 1)
  assert isinstance(optim.make(sgd_cfg(), 1), optax.GradientTransformation)


@pytest.mark.slow
def test_final_evaluation_writes_predictions_plots_and_report(tiny_data_dir, tfds_dir, tmp_path):
  """System 1's one-vs-all sigmoid heads on single-label data: per-class probabilities that
  need not sum to one, so the argmax is scored and log loss / ECE are left out."""
  config = tiny_config(tiny_data_dir, tfds_dir, total_steps=2, loss="sigmoid_xent",
                       **{"early_stopping.metric": "exact_match"})
  results = trainer.train_and_evaluate(config, tmp_path)
  rows = (tmp_path / "predictions" / "test.csv").read_text().splitlines()
  assert rows[0] == "id,label,predicted,score/blank,score/blob" and len(rows) == 17
  ids = sorted(row.split(",")[0] for row in rows[1:])
  assert ids == sorted(f"test/{c}/{c}_{i:03d}.png" for c in ("blank", "blob") for i in range(8))
  assert all(row.split(",")[1] == row.split("/")[1] for row in rows[1:])  # Label = folder.
  assert all(0 <= float(v) <= 1 for row in rows[1:] for v in row.split(",")[3:])
  assert "test/roc_auc/ci95_low" in results and "test/log_loss" not in results
  for key in [k for k in results if k.endswith("/ci95_low")]:  # Every interval has its estimate.
    assert results[key] <= results[key.removesuffix("/ci95_low")] <= results[
        key.replace("ci95_low", "ci95_high")], key
  assert (tmp_path / "predictions" / "val.csv").is_file()
  assert sorted(p.name for p in (tmp_path / "plots").glob("test_*.png")) == [
      "test_confusion.png", "test_pr.png", "test_roc.png"]
  page = (tmp_path / "report.html").read_text()
  assert "<h2>Most confidently wrong test examples</h2>" in page
  assert "(image not available)" not in page  # Thumbnails came from the test records.
  wrong = sum(row.split(",")[1] != row.split(",")[2] for row in rows[1:])
  assert page.count("<figure><img alt='test/") == min(wrong, 8)
  # Examples per split and class: 22 + 22 train and 2 + 2 val (a stratified carve), 8 + 8 test.
  assert ("<tr><td>train</td><td class=n>22</td><td class=n>22</td><td class=n>44</td></tr>"
          in page)
  assert "<tr><td>test</td><td class=n>8</td><td class=n>8</td><td class=n>16</td></tr>" in page


@pytest.mark.slow
def test_tools_restore_the_moving_average_the_run_evaluated(tiny_data_dir, tfds_dir, tmp_path):
  # Without early stopping the evaluated parameters are the EMA, kept in best_checkpoint;
  # predict, explain, export and from_workdir must restore those, not the raw weights.
  from medjax import runloop
  config = tiny_config(tiny_data_dir, tfds_dir, total_steps=4,
                       **{"optimizer.ema_decay": 0.5, "early_stopping.metric": ""})
  trainer.train_and_evaluate(config, tmp_path)
  restored = runloop.restore_trained(tmp_path, config)
  ckpts = runloop.Checkpoints(tmp_path)
  latest = ckpts.latest.restore(ckpts.latest_step(), args=runloop.ocp.args.StandardRestore())
  ckpts.close()
  ema, raw = latest["opt_state"][-1]["ema"], latest["params"]
  jax.tree.map(np.testing.assert_array_equal, restored["params"], ema)
  assert not np.allclose(raw["fc1"]["kernel"], ema["fc1"]["kernel"])
