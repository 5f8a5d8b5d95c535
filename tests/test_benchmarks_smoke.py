"""The benchmark runner end to end on one tiny case: records and JSON, never timings."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from benchmarks import run, timing, vlad


def test_runner_writes_records_with_the_schema(tmp_path):
  out = tmp_path / "bench.json"
  case = timing.Case("vlad/tiny", lambda: vlad.vlad_case(images=3, repeats=1, per_image=8, k=4))
  records = run.run_cases([case], quick=True, out=out)
  assert json.loads(out.read_text()) == records
  (record,) = records
  for field in timing.RECORD_FIELDS:
    assert field in record
  assert record["peer"] == "numpy"
  assert record["ratio"] == record["peer_seconds"] / record["medjax_seconds"]
  assert record["medjax_images_per_s"] > 0 and record["peer_images_per_s"] > 0
  assert record["max_abs_diff"] < 1e-5
  assert len(record["load_avg_before"]) == 3 and record["threads"] >= 1
  assert "vlad/3img_8x512_k4" in timing.markdown_table(records)


def test_every_case_is_listed_and_quick_covers_the_full_suite():
  assert [c.name for c in run.all_cases(quick=True)] == [c.name for c in run.all_cases(False)]
  assert {c.name.split("/")[0] for c in run.all_cases(quick=True)} == {
      "train_step", "finetune", "extraction", "svm", "kmeans", "vlad", "input_pipeline", "retrieval_scale"}


def test_records_name_the_device_and_versions():
  case = timing.Case("vlad/tiny", lambda: vlad.vlad_case(images=2, repeats=1, per_image=8, k=4))
  (record,) = run.run_cases([case], quick=True)
  assert record["device"] and record["jax"] and record["torch"]
  assert record["cpu"]["model"] and record["cpu"]["cores"] >= 1
  assert isinstance(record["cpu"]["isa"], list)
  assert record["peer"] == "numpy" and timing.peer_name() == "pytorch"  # CPU here.


@pytest.mark.parametrize("isa, runs", [(["avx2", "fma"], False), (["avx2", "avx512_bf16"], True),
                                       (["amx_tile", "amx_bf16"], True), (["asimd", "bf16"], True)])
def test_bf16_cases_run_only_where_the_cpu_has_bf16_arithmetic(monkeypatch, isa, runs):
  from medjax import provenance
  monkeypatch.setattr(provenance, "cpu", lambda: {"model": "x", "family": "v/1/2", "isa": isa,
                                                  "cores": 2})
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")  # The check is for CPUs only.
  case = timing.needs_bf16_units(lambda: {"ran": True})
  if runs:
    assert case() == {"ran": True}
  else:
    with pytest.raises(timing.SkipCase, match="no bfloat16 arithmetic"):
      case()
  bf16_cases = [c for c in run.all_cases(quick=True) if c.name.endswith("_bf16")]
  assert len(bf16_cases) == 5
  if not runs:  # Every listed bfloat16 case goes through the check (skips before any work).
    for c in bf16_cases:
      with pytest.raises(timing.SkipCase):
        c.run()


def test_flops_and_fraction_of_peak_on_an_accelerator(monkeypatch):
  """The count is the model's (convolution + matmul as written); CPU records carry none."""
  x, w, v = jnp.ones((2, 16, 16, 3)), jnp.ones((3, 3, 3, 8)), jnp.ones((16 * 16 * 8, 10))

  @jax.jit
  def fn(x, w, v):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(2, -1) @ v

  assert timing.accelerator_flops(fn, x, w, v) is None
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  conv = 2 * (2 * 14 * 14 * 8) * (3 * 3 * 3)
  matmul = 2 * 2 * (16 * 16 * 8) * 10
  assert timing.accelerator_flops(fn, x, w, v) == conv + matmul
  monkeypatch.setattr(timing, "matmul_peak", lambda: 4e12)
  record = timing.compare("f", lambda: 0, "p", lambda: 0, repeats=1, flops=1e9)
  assert record["peak_tflop_per_s"] == 4.0
  assert record["fraction_of_peak"] == record["medjax_tflop_per_s"] / 4.0


@pytest.mark.slow
def test_accelerator_paths_import_without_tensorflow():
  """A GPU box need not have TensorFlow: the train step, feature extraction and every
  benchmark case but the tf.data input pipeline import without it."""
  code = ("import sys\n"
          "for m in ('tensorflow', 'tensorflow_datasets', 'clu'): sys.modules[m] = None\n"
          "import medjax.train.step, medjax.features.extract, benchmarks.run\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.slow
def test_each_case_runs_in_its_own_process_and_an_unknown_case_is_one_line(tmp_path):
  root = Path(__file__).parents[1]
  out = tmp_path / "bench.json"
  done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only=vlad",
                         f"--out={out}"], cwd=root, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  (record,) = json.loads(out.read_text())
  assert record["name"].startswith("vlad/") and record["quick"]
  assert "| vlad/" in done.stdout  # The parent's table of the child's record.
  assert done.stderr.count("running vlad") == 1  # Logged by the one child that ran it.
  bad = subprocess.run([sys.executable, "-m", "benchmarks.run", "--case=vlad/none",
                        f"--out={out}"], cwd=root, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "--case=vlad/none: no such case" in bad.stderr
  assert "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [False, True])
def test_finetune_cases_step_the_trainers_step_on_tiny_images(recipe):
  """The fine-tuning cases build the step from configs/finetune.py outside the trainer, so
  a config default the trainer resolves from the data (``loss='auto'``) must be resolved
  here too; one step on two 32-pixel images catches it before a long benchmark run does."""
  import numpy as np

  from benchmarks import finetune
  config = finetune._config(recipe, 32)
  assert config.loss == "softmax_xent"
  run_step, _ = finetune._medjax_step(config, np.zeros((2, 32, 32, 3), np.float32),
                                      np.array([0, 1], np.int32))
  (metrics,) = run_step()
  assert np.isfinite(float(metrics["loss"]))
