"""Every run writes the same index and metrics; medjax.retrieve and the service use them.

A tiny supervised run and tiny frozen-feature runs (avgpool, whose encoder embeds new
images, and ICA, whose does not) on the tiny image folder, built once for the module.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from starlette.testclient import TestClient

from medjax import serve
from medjax.features import pipeline
from medjax.retrieval import index as index_lib
from medjax.retrieval import service
from medjax.train import trainer
from tests.conftest import REPO_ROOT, tiny_config
from tests.features.test_extract import tiny_frozen_config

pytestmark = pytest.mark.slow  # Trained runs (about a minute on 2 cores), subprocesses.


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory):
  tfds = tmp_path_factory.mktemp("tfds")
  out = {}
  out["supervised"] = tmp_path_factory.mktemp("supervised")
  trainer.train_and_evaluate(tiny_config(tiny_data_dir, tfds, total_steps=2), out["supervised"])
  features = tmp_path_factory.mktemp("features")
  for aggregation in ("avgpool", "ica"):
    out[aggregation] = tmp_path_factory.mktemp(aggregation)
    pipeline.train_and_evaluate(
        tiny_frozen_config(tiny_data_dir, tfds, f"aggregation={aggregation}",
                           features_dir=str(features), **{"baseline.components": 4}),
        out[aggregation])
  return out


def retrieve(*args):
  return subprocess.run([sys.executable, "-m", "medjax.retrieve", *map(str, args)],
                        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


@pytest.mark.parametrize("kind", ["supervised", "avgpool", "ica"])
def test_every_run_writes_the_index_and_metrics_with_intervals(runs, kind, tiny_data_dir):
  results = json.loads((runs[kind] / "results.json").read_text())
  for key in ("mAP", "P@1", "P@5", "P@10"):
    assert results[f"retrieval/{key}/ci95_low"] <= results[f"retrieval/{key}"] <= results[
        f"retrieval/{key}/ci95_high"], key
  assert len(results["retrieval/pr_curve/precision"]) == 11
  assert results["retrieval/num_queries"] == 16
  index = index_lib.load(runs[kind] / "retrieval")
  assert len(index) >= 40 and index.meta["class_names"] == ["blank", "blob"]
  # The training images' paths, each a file of the tiny folder with the id's name.
  assert all(str(p).endswith(str(i)) and (tiny_data_dir / "image_folder" / str(i)).is_file()
             for i, p in zip(index.ids, index.paths))
  assert (runs[kind] / "plots" / "pr_curve.png").is_file()


@pytest.mark.parametrize("kind", ["supervised", "avgpool", "ica"])
def test_retrieve_query_prints_k_labelled_neighbours_from_the_indexed_embedding(
    runs, kind, tiny_data_dir):
  """Training images queried through the run's saved model (and aggregation: ICA) find
  themselves first, at distance 0: the query embedding is the one the run indexed. Query
  images are arguments, as predict, explain and classify take images."""
  index = index_lib.load(runs[kind] / "retrieval")
  own = [tiny_data_dir / "image_folder" / index.ids[i] for i in (3, 7)]
  result = retrieve(f"--workdir={runs[kind]}", "--k=10", *own)
  assert result.returncode == 0, result.stderr[-2000:]
  blocks = result.stdout.split("# ")[1:]
  assert [b.splitlines()[0] for b in blocks] == [str(p) for p in own]
  for block, i in zip(blocks, (3, 7)):
    rows = [line.split("\t") for line in block.splitlines() if line[:1].isdigit()]
    assert [r[0] for r in rows] == [str(r) for r in range(1, 11)]
    assert all(r[2] in ("blank", "blob") for r in rows)
    assert [float(r[3]) for r in rows] == sorted(float(r[3]) for r in rows)
    assert rows[0][1] == str(index.ids[i]) and float(rows[0][3]) == pytest.approx(0, abs=1e-3)


def test_retrieve_split_rescores_any_run_and_a_query_that_is_no_image_is_named(runs):
  stored = json.loads((runs["ica"] / "results.json").read_text())
  result = retrieve(f"--workdir={runs['ica']}", "--split=test")
  assert result.returncode == 0, result.stderr[-2000:]
  printed = json.loads(result.stdout[:result.stdout.rindex("}") + 1])
  assert printed["mAP"] == pytest.approx(stored["retrieval/mAP"])
  result = retrieve(f"--workdir={runs['ica']}", REPO_ROOT / "README.md")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "README.md" in result.stderr.strip().splitlines()[-1]
  result = retrieve(f"--workdir={runs['ica']}", "--split=val")  # The run saved test queries.
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(
      "queries_val.npz not found; its splits are ['test']")


def test_served_run_answers_queries_with_thumbnails_and_explanations(runs, tiny_data_dir):
  app = serve.create_app(service.from_run(runs["supervised"]))
  image = (tiny_data_dir / "image_folder" / "test" / "blob" / "blob_001.png").read_bytes()
  with TestClient(app) as client:
    assert client.get("/api/health").json()["index_size"] >= 40
    answer = client.post("/api/query", files={"image": ("q.png", image, "image/png")},
                         data={"k": "4", "explain": "occlusion"}).json()
    assert len(answer["neighbours"]) == 4
    assert set(answer["prediction"]["scores"]) == {"blank", "blob"}
    assert sum(answer["prediction"]["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answer["explanation"]["image"].startswith("data:image/png;base64,")
    for n in answer["neighbours"]:
      assert client.get(n["thumbnail"]).headers["content-type"] == "image/jpeg"
    metrics = client.get("/api/metrics").json()
    assert 0 < metrics["mAP"] <= 1 and "P@10/ci95_low" in metrics
  # The query's embedding is the one the run indexed: a training image finds itself.
  index = index_lib.load(runs["supervised"] / "retrieval")
  own = tiny_data_dir / "image_folder" / index.ids[5]
  with TestClient(app) as client:
    answer = client.post("/api/query", files={"image": ("q.png", own.read_bytes(), "image/png")},
                         data={"k": "1"}).json()
  assert answer["neighbours"][0]["id"] == 5
  assert answer["neighbours"][0]["distance"] == pytest.approx(0, abs=1e-3)
  assert np.isfinite(answer["neighbours"][0]["distance"])


def test_retrieve_add_appends_images_in_place_and_finds_them(runs, tiny_data_dir, tmp_path):
  """Last in the module: it grows the supervised run's index."""
  workdir = runs["supervised"]
  before = index_lib.load(workdir / "retrieval")
  new = tmp_path / "new"
  new.mkdir()
  for name in ("blob_002.png", "blob_003.png"):
    (new / name).write_bytes((tiny_data_dir / "image_folder" / "test" / "blob" / name).read_bytes())
  # Added, then found by the same command (the query searches the grown index).
  result = retrieve(f"--workdir={workdir}", f"--add={new}", "--label=blob",
                    new / "blob_003.png", "--k=1")
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"added 2 images; the index holds {len(before) + 2}" in result.stdout
  after = index_lib.load(workdir / "retrieval")
  np.testing.assert_array_equal(after.embeddings[:len(before)], before.embeddings)
  assert after.labels[-1] == 1 and after.paths[-1] == str((new / "blob_003.png").resolve())
  assert result.stdout.splitlines()[2].split("\t")[1] == str((new / "blob_003.png").resolve())
  # Refusals (the CLI turns a UserError into one line and exit 2: tests/test_cli.py).
  from medjax import cli, inference, retrieve as retrieve_cli
  from medjax.retrieval.runs import open_index
  run = inference.load(workdir)
  with pytest.raises(cli.UserError, match="already indexed"):
    retrieve_cli.add_images(run, open_index(workdir), [str(new)], "blob")
  with pytest.raises(cli.UserError, match="'cat'"):
    retrieve_cli.add_images(run, open_index(workdir), [str(new)], "cat")
