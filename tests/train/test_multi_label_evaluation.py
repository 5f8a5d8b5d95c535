"""System 1's multi-label run (four one-vs-all LeNet heads) on a stand-in ImageCLEF 2015
archive: one column per label in the predictions CSV, per-label AUC and the task's exact /
any / Hamming measures with intervals, label counts in the report."""
import numpy as np
import pytest

from configs import lenet_imageclef15
from medjax.eval import predictions
from medjax.train import trainer
from tests.conftest import set_dotted
from tests.data.standins import write_image

LABELS = ("Body", "Head-Neck", "Upper-Limb", "Lower-Limb")


def _archive(root, rng):
  for split, n in (("train", 40), ("test", 12)):
    lines = []
    for i in range(n):
      write_image(root / split / f"{split}{i:02d}.jpg", size=32, seed=i)
      hot = rng.random(4) < 0.4
      lines.append(f"{split}{i:02d}.jpg " + ",".join(np.asarray(LABELS)[hot]) if hot.any()
                   else f"{split}{i:02d}.jpg TrueNegative")
    (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_multi_label_run_writes_label_columns_and_interval(tmp_path):
  _archive(tmp_path / "data" / "imageclef2015", np.random.default_rng(0))
  config = lenet_imageclef15.get_config("smoke,image_size=32")
  config.data.manual_dir = str(tmp_path / "data")
  config.data.tfds_dir = str(tmp_path / "tfds")
  set_dotted(config, {"total_steps": 2, "batch_size": 4, "eval_batch_size": 4,
                      "data.val_fraction": 0.0, "data.val_split": "", "data.train_split": "train",
                      "data.test_split": "test",
                      "pp_eval": "decode(3)|resize(32)|take_channel(0)",
                      "pp_train": "decode(3)|resize(32)|take_channel(0)"})
  results = trainer.train_and_evaluate(config, tmp_path / "work")
  p = predictions.read(tmp_path / "work" / "predictions" / "test.csv")
  header = (tmp_path / "work" / "predictions" / "test.csv").read_text().splitlines()[0]
  assert header.split(",")[:6] == ["id", "label/Body", "label/Head-Neck", "label/Upper-Limb",
                                   "label/Lower-Limb", "predicted/Body"]
  assert p.multi_label and p.labels.shape == (12, 4) and len(set(p.ids)) == 12
  np.testing.assert_array_equal(p.predicted, p.scores > 0.5)
  exact = float((p.predicted == p.labels).all(1).mean())
  assert results["test/exact_match"] == pytest.approx(exact)
  for key in ("exact_match", "any_match", "hamming_similarity"):
    assert results[f"test/{key}/ci95_low"] <= results[f"test/{key}"] <= results[
        f"test/{key}/ci95_high"]
  assert any(k.startswith("test/roc_auc/") for k in results)
  page = (tmp_path / "work" / "report.html").read_text()
  counts = p.labels.sum(0)
  assert ("<tr><td>test</td>" + "".join(f"<td class=n>{c}</td>" for c in counts)
          + f"<td class=n>{counts.sum()}</td></tr>") in page
