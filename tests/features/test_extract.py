"""Feature extraction: chunks on disk, reuse without recomputation, recovery from a killed
run (half-written chunks discarded, resumed to the same features), recipe checks.

The backbone is the real EfficientNet-Lite0 on the tiny generated image folder at small
input sizes, so the whole module runs in well under a minute.
"""
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from medjax import cli, kernels, parallel
from medjax.data.pipeline import InputPipeline
from medjax.kernels import windows
from medjax.models import backbones
from medjax.features import extract, pipeline
from tests.conftest import REPO_ROOT, set_dotted, sigkill_when

SCALE = 64


def tiny_frozen_config(data_dir, tfds_dir, arg: str = "", **overrides):
  """The frozen-feature config of the aggregation in ``arg`` (system 5's for avgpool and
  vlad, else system 3's, both with VGG19) on the tiny image folder at 64 px, 8-image
  batches, 2-batch chunks. ``overrides`` of sections the config lacks are ignored."""
  from configs import cae_imageclef16, vlad
  system = cae_imageclef16 if any(f"aggregation={a}" in arg for a in (
      "cae", "sparse_coding", "ica", "ssae")) else vlad
  config = system.get_config(f"dataset=image_folder,backbone=vgg19,scale={SCALE}"
                             f"{',' if arg else ''}{arg}")
  overrides = {k: v for k, v in overrides.items() if k.split(".")[0] in config}
  config.data.manual_dir = str(data_dir)
  config.data.tfds_dir = str(tfds_dir)
  config.features.batch_size = 8
  config.features.chunk_batches = 2
  return set_dotted(config, overrides)


class Counting:
  """Wraps a feature function and counts the batches it is asked for."""

  def __init__(self, fn):
    self.fn, self.calls = fn, 0

  def __call__(self, variables, images):
    self.calls += 1
    return self.fn(variables, images)


@pytest.fixture(scope="module")
def setup(tiny_data_dir, tfds_dir, tmp_path_factory):
  config = tiny_frozen_config(tiny_data_dir, tfds_dir)
  mesh = parallel.make_mesh()
  data = InputPipeline(config, tmp_path_factory.mktemp("work"), mesh)
  backbone = pipeline.load_backbone(config.backbone)
  variables = parallel.replicate(backbone.variables, mesh)
  recipe = extract.Recipe(backbone=backbone.spec.name, weights=backbone.spec.weights,
                          layer="head", pp=extract.input_pp(backbone.spec, SCALE),
                          split="train", pool=False, l2=False)
  fn = extract.make_feature_fn(backbone.module, "head", pool=False, l2=False)

  def run(folder, feature_fn=fn, recipe=recipe, batch_size=8):
    return extract.extract(data, "train", folder, recipe, feature_fn, variables,
                           batch_size=batch_size, chunk_batches=2)

  reference = tmp_path_factory.mktemp("reference")
  run(reference)
  # One pass per split and scale: nothing is kept in the in-memory image cache, which at
  # 864 px would outgrow the machine's memory.
  assert config.data.cache == "preprocessed" and not data._preprocessed
  return run, reference, fn, recipe, backbone.module


def test_chunks_cover_the_split_once(setup):
  _, reference, *_ = setup
  manifest = json.loads((reference / extract.MANIFEST).read_text())
  assert manifest["complete"] and [c["rows"] for c in manifest["chunks"]] == [16, 16, 16]
  features, labels = extract.load(reference)
  assert features.shape == (48, 2, 2, 1280) and labels.shape == (48,)
  assert sorted(np.bincount(labels)) == [24, 24]
  assert manifest["recipe"]["layer"] == "head" and "normalize('efficientnet_lite')" in (
      manifest["recipe"]["pp"])


def test_complete_features_are_reused_without_recomputation(setup):
  run, reference, fn, *_ = setup
  mtimes = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
  counting = Counting(fn)
  run(reference, counting)
  assert counting.calls == 0
  assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == mtimes


def test_a_second_extraction_into_a_locked_folder_waits_then_reuses(setup):
  run, reference, fn, *_ = setup
  counting = Counting(fn)
  with (reference / extract.LOCK).open("w") as lock:  # Another run is extracting.
    fcntl.flock(lock, fcntl.LOCK_EX)
    second = threading.Thread(target=run, args=(reference, counting))
    second.start()
    second.join(1.0)
    assert second.is_alive()
    fcntl.flock(lock, fcntl.LOCK_UN)
  second.join(60)
  assert not second.is_alive() and counting.calls == 0


def test_half_written_chunks_are_discarded_and_redone(setup, tmp_path):
  run, reference, fn, *_ = setup
  folder = tmp_path / "killed"
  shutil.copytree(reference, folder)
  # As if killed after chunk 0 was listed: chunk 1 renamed but not yet in the manifest,
  # chunk 2 still a temp file.
  manifest = json.loads((folder / extract.MANIFEST).read_text())
  manifest["chunks"], manifest["complete"] = manifest["chunks"][:1], False
  (folder / extract.MANIFEST).write_text(json.dumps(manifest))
  (folder / "chunk_00001.npz").write_bytes(b"half a chunk")
  (folder / "chunk_00002.npz.tmp").write_bytes(b"half a temp file")
  counting = Counting(fn)
  run(folder, counting)
  assert counting.calls == 4  # Chunks 1 and 2, two batches each; chunk 0 kept.
  assert not list(folder.glob("*.tmp"))
  np.testing.assert_array_equal(extract.load(folder)[0], extract.load(reference)[0])


@pytest.mark.slow
def test_a_rerun_with_another_batch_size_resumes_at_the_last_stored_example(setup, tmp_path):
  run, reference, fn, *_ = setup
  folder = tmp_path / "smaller_batches"
  shutil.copytree(reference, folder)
  manifest = json.loads((folder / extract.MANIFEST).read_text())
  manifest["chunks"], manifest["complete"] = manifest["chunks"][:1], False  # 16 examples.
  (folder / extract.MANIFEST).write_text(json.dumps(manifest))
  counting = Counting(fn)
  run(folder, counting, batch_size=6)  # Batches start at 0, 6, 12 (4 of it stored), 18, ...
  assert counting.calls == 6
  features, labels = extract.load(folder)
  ref_features, ref_labels = extract.load(reference)
  np.testing.assert_array_equal(labels, ref_labels)
  np.testing.assert_allclose(features, ref_features, rtol=1e-5, atol=1e-5)


def test_a_listed_chunk_of_the_wrong_size_is_redone(setup, tmp_path):
  run, reference, fn, *_ = setup
  folder = tmp_path / "truncated"
  shutil.copytree(reference, folder)
  path = folder / "chunk_00001.npz"
  path.write_bytes(path.read_bytes()[:100])
  counting = Counting(fn)
  run(folder, counting)
  assert counting.calls == 4  # Chunk 1 and every chunk after it.
  np.testing.assert_array_equal(extract.load(folder)[0], extract.load(reference)[0])


def test_features_of_another_recipe_are_refused(setup):
  run, reference, fn, recipe, _ = setup
  spec = backbones.get_spec("googlenet")  # Another normalisation and resize rule.
  other = extract.Recipe(**{**recipe.__dict__, "pp": extract.input_pp(spec, SCALE)})
  with pytest.raises(cli.UserError, match=r"another recipe \(differs in \['pp'\]"):
    run(reference, fn, other)


def test_the_compute_dtype_has_its_own_folder_float32_keeps_the_old_name(tmp_path):
  kw = dict(pool=True, l2=False)
  assert extract.feature_dir(tmp_path, "train", 224, "conv5", **kw) == \
      tmp_path / "train" / "224" / "conv5_avgpool"
  assert extract.feature_dir(tmp_path, "train", 224, "conv5", **kw, compute_dtype="bfloat16") \
      == tmp_path / "train" / "224" / "conv5_avgpool_bfloat16"


def test_manifests_from_before_compute_dtype_are_float32(setup, tmp_path):
  """A folder written before the recipe named its compute dtype is reused as float32 and
  refused for bfloat16."""
  run, reference, fn, recipe, _ = setup
  manifest = json.loads((reference / extract.MANIFEST).read_text())
  del manifest["recipe"]["compute_dtype"]
  shutil.copytree(reference, tmp_path / "old")
  (tmp_path / "old" / extract.MANIFEST).write_text(json.dumps(manifest))
  counting = Counting(fn)
  run(tmp_path / "old", counting)
  assert counting.calls == 0
  bf16 = extract.Recipe(**{**recipe.__dict__, "compute_dtype": "bfloat16"})
  with pytest.raises(ValueError, match=r"differs in \['compute_dtype'\]"):
    run(tmp_path / "old", fn, bf16)


@pytest.mark.slow
def test_bfloat16_features_are_float32_and_near_float32_compute(setup, tmp_path):
  run, reference, _, recipe, module = setup
  bf16 = extract.make_feature_fn(module, "head", pool=False, l2=False, compute_dtype="bfloat16")
  run(tmp_path, bf16, extract.Recipe(**{**recipe.__dict__, "compute_dtype": "bfloat16"}))
  features, _ = extract.load(tmp_path)
  maps, _ = extract.load(reference)
  assert features.dtype == np.float32
  # Some 50 layers of bfloat16 rounding on synthetic images: the maps within a few tenths
  # in relative norm, each image's pooled vector pointing much the same way.
  error = np.linalg.norm(features - maps) / np.linalg.norm(maps)
  assert 0 < error < 0.3
  pooled, pooled32 = features.mean((1, 2)), maps.mean((1, 2))
  cosine = np.sum(pooled * pooled32, 1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(
      pooled32, axis=1)
  assert cosine.mean() > 0.95 and cosine.min() > 0.8


def test_pooled_l2_features(setup, tmp_path):
  run, reference, _, recipe, module = setup
  pooled = extract.make_feature_fn(module, "head", pool=True, l2=True)
  run(tmp_path, pooled, extract.Recipe(**{**recipe.__dict__, "pool": True, "l2": True}))
  features, _ = extract.load(tmp_path)
  maps, _ = extract.load(reference)
  expected = maps.mean((1, 2))
  expected /= np.linalg.norm(expected, axis=1, keepdims=True)
  np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_cpu_chunks_give_the_whole_batch_features(setup, monkeypatch):
  """The batch split into CPU chunks (here 2 images of 64 x 64) gives the features of one
  forward pass over the whole batch."""
  _, _, _, _, module = setup
  images = np.random.default_rng(0).random((6, SCALE, SCALE, 3), np.float32)
  variables = kernels.jit(module.init, once=True)(jax.random.PRNGKey(0), images[:1])
  whole = extract.make_feature_fn(module, "head", pool=True, l2=False)(variables, images)
  assert module.kernels == kernels.XLA_CPU  # Built on the CPU backend: chunked.
  assert kernels.image_chunk((64, 224, 224, 3), fast=True) == 4  # 5 fit, 4 divides 64.
  assert kernels.image_chunk((8, 864, 864, 3), fast=True) == 1
  assert kernels.image_chunk((64, 224, 224, 3), fast=False) == 64  # Reference ops: whole.
  monkeypatch.setattr(windows, "CPU_CHUNK_PIXELS", 2 * SCALE * SCALE + 1)
  assert kernels.image_chunk(images.shape, fast=True) == 2
  chunked = extract.make_feature_fn(module, "head", pool=True, l2=False)(variables, images)
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_extraction_killed_by_sigkill_resumes_to_the_same_results(tiny_data_dir, tfds_dir,
                                                                   tmp_path):
  """The CLI, killed with SIGKILL once two chunks exist, then rerun, ends as an uninterrupted
  in-process run of the same config does."""
  arg = "dataset=image_folder,aggregation=avgpool,scale=64"  # Small: the kill is the point.
  flags = [f"--config.data.manual_dir={tiny_data_dir}", f"--config.data.tfds_dir={tfds_dir}",
           "--config.features.batch_size=8", "--config.features.chunk_batches=1"]
  workdir = tmp_path / "killed"
  command = [sys.executable, "-m", "medjax.main", f"--config=configs/vlad.py:{arg}",
             f"--workdir={workdir}", *flags]
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  chunk = workdir / "features" / "train" / "64" / "head_avgpool_l2" / "chunk_00001.npz"
  sigkill_when(command, env, chunk.exists, timeout=300)
  assert not (workdir / "results.json").exists()
  manifest = json.loads((chunk.parent / extract.MANIFEST).read_text())
  assert not manifest["complete"]

  resumed = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming extraction" in resumed.stderr

  config = tiny_frozen_config(tiny_data_dir, tfds_dir, "aggregation=avgpool,scale=64",
                              **{"features.chunk_batches": 1})
  uninterrupted = pipeline.train_and_evaluate(config, tmp_path / "uninterrupted")
  got = json.loads((workdir / "results.json").read_text())
  for key, value in uninterrupted.items():
    if key.startswith(("train/", "test/", "svm/")):
      assert got[key] == (value if isinstance(value, (list, str)) else pytest.approx(value)), key
