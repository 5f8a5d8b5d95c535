"""Comparing runs: rows with intervals, paired tests on examples matched by id, refusals;
and the CLI's one-line error with exit status 2."""
import json
import subprocess
import sys

import numpy as np
import pytest

from medjax.eval import calibration, comparison, evaluation, paired
from tests.conftest import REPO_ROOT

NAMES = ("NORMAL", "PNEUMONIA")


def fake_run(workdir, ids, labels, probs):
  """A finished run's workdir as the pipelines leave it (predictions, results.json)."""
  measures = evaluation.final(workdir, "test", ids, labels, probs, NAMES, probabilities=True)
  results = {f"test/{k}": v for k, v in measures.items()}
  results["test/accuracy"] = float((probs.argmax(1) == labels).mean())
  (workdir / "results.json").write_text(json.dumps(results))
  return workdir


@pytest.fixture
def two_runs(tmp_path):
  rng = np.random.default_rng(0)
  labels = (rng.random(150) < 0.6).astype(int)
  ids = [f"test/x/{i:03d}.jpeg" for i in range(150)]
  good = calibration.softmax(rng.normal(size=(150, 2)) + 2.0 * np.eye(2)[labels])
  weak = calibration.softmax(rng.normal(size=(150, 2)) + 0.7 * np.eye(2)[labels])
  a = fake_run((tmp_path / "good").resolve(), ids, labels, good)
  # The second run lists the same examples in another order: matched by id.
  order = rng.permutation(150)
  (tmp_path / "weak").mkdir()
  b = fake_run(tmp_path / "weak", [ids[i] for i in order], labels[order], weak[order])
  return a, b, labels, good, weak


def test_rows_and_paired_tests_match_the_examples_by_id(two_runs):
  a, b, labels, good, weak = two_runs
  rows, tests = comparison.compare([a, b])
  assert [r["run"] for r in rows] == ["good", "weak"]
  assert rows[0]["roc_auc low"] < rows[0]["roc_auc"] < rows[0]["roc_auc high"]
  assert "sensitivity/PNEUMONIA" in rows[1]
  (t,) = tests
  d = paired.delong(labels == 1, good[:, 1], weak[:, 1])
  assert t["AUC test"] == "DeLong" and t["AUC p"] == pytest.approx(d["p_value"])
  assert t["AUC a"] > t["AUC b"] and t["AUC p"] < 0.05
  assert (t["AUC a - b low"], t["AUC a - b high"]) == pytest.approx(
      (d["difference/ci95_low"], d["difference/ci95_high"]))
  assert 0 < t["AUC a - b low"] < t["AUC a"] - t["AUC b"] < t["AUC a - b high"]
  m = paired.mcnemar_exact(good.argmax(1) == labels, weak.argmax(1) == labels)
  assert t["McNemar p"] == pytest.approx(m["p_value"])
  text = comparison.markdown(rows, tests)
  assert "| good | 150 |" in text and "DeLong" in text
  assert comparison.to_csv(rows).splitlines()[0].startswith("run,workdir,examples,accuracy")


def test_runs_on_different_examples_are_refused(two_runs, tmp_path):
  a, _, labels, good, _ = two_runs
  other = tmp_path / "other"
  other.mkdir()
  fake_run(other, [f"test/y/{i:03d}.jpeg" for i in range(150)], labels, good)
  with pytest.raises(ValueError, match="different examples"):
    comparison.compare([a, other])
  with pytest.raises(ValueError, match="no results.json"):
    comparison.compare([a, tmp_path])


@pytest.mark.slow
def test_cli_prints_the_comparison_and_refuses_in_one_line(two_runs, tmp_path):
  a, b, *_ = two_runs
  def compare(*args):
    return subprocess.run([sys.executable, "-m", "medjax.compare", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)

  # The runs are named as medjax.ensemble names them: --workdirs=W1,W2.
  ok = compare(f"--workdirs={a},{b}", f"--out={tmp_path / 'cmp'}")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "| good | 150 |" in ok.stdout and "DeLong" in ok.stdout
  assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"comparison.md", "runs.csv",
                                                            "pairs.csv"}
  bad = compare(f"--workdirs={a},{tmp_path / 'nope'}")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1] == (
      f"medjax.compare: error: {tmp_path / 'nope'} is not a directory")
  assert "Traceback" not in bad.stderr
  # Runs as arguments (the old usage) are one line pointing at --workdirs=.
  old = compare(a, b)
  assert old.returncode == 2 and "Traceback" not in old.stderr
  assert old.stderr.strip().splitlines() == [
      f"medjax.compare: error: give the runs as --workdirs={a},{b}, not as arguments"]
