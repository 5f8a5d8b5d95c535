"""medjax.predict's rows on a toy run (fast tier): batching and padding change nothing, an
unreadable or missing image gets a row saying why, labels must name the run's classes."""
import csv
import io

import numpy as np
import pytest
from PIL import Image

from medjax import cli, inference, predict
from test_explain_methods import _run


def test_rows_in_input_order_with_error_rows(tmp_path):
  run = _run()
  run.pp = "decode(1)|resize(32)"
  paths = []
  for i in range(7):
    paths.append(tmp_path / f"img{i}.png")
    Image.fromarray(np.full((40, 40), 30 * i, np.uint8)).save(paths[-1])
  cut = tmp_path / "cut.jpg"
  Image.fromarray(np.full((40, 40), 99, np.uint8)).save(cut)
  cut.write_bytes(cut.read_bytes()[:100])
  inputs = paths[:3] + [cut, tmp_path / "missing.png"] + paths[3:]
  scores, errors = inference.predict_files(run, inputs, batch_size=4)
  at_once, _ = inference.predict_files(run, paths, batch_size=8)  # One padded batch.
  good = [i for i, e in enumerate(errors) if not e]
  assert good == [0, 1, 2, 5, 6, 7, 8]
  np.testing.assert_allclose(scores[good], at_once, atol=1e-6)
  rows = list(csv.DictReader(io.StringIO(predict.table(run, inputs, [""] * 9, scores, errors))))
  assert [r["path"] for r in rows] == [str(p) for p in inputs]
  assert "truncated" in rows[3]["error"] and "does not exist" in rows[4]["error"]
  assert rows[3]["predicted"] == rows[3]["score/a"] == ""
  # Brighter images light the corner the toy model reads: class b, then a for black.
  assert rows[0]["predicted"] == "a" and rows[8]["predicted"] == "b"
  with pytest.raises(cli.UserError, match="'c'"):
    predict.table(run, inputs[:1], ["c"], scores[:1], errors[:1])


def test_inputs_expand_folders_and_csvs_and_refuse_missing_ones(tmp_path):
  (tmp_path / "f" / "sub").mkdir(parents=True)
  Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "f" / "sub" / "a.png")
  (tmp_path / "list.csv").write_text("path,label\nf/sub/a.png,b\n")
  paths, labels = inference.expand_inputs([str(tmp_path / "f"), str(tmp_path / "list.csv")])
  assert paths == [tmp_path / "f" / "sub" / "a.png"] * 2 and labels == ["", "b"]
  (tmp_path / "paths.csv").write_text("path\nf/sub/a.png\n")  # Predicting needs no label.
  assert inference.expand_inputs([str(tmp_path / "paths.csv")]) == ([paths[0]], [""])
  (tmp_path / "nopath.csv").write_text("file,label\nf/sub/a.png,b\n")
  with pytest.raises(cli.UserError, match=r"nopath.csv lacks the column\(s\) \['path'\]"):
    inference.expand_inputs([str(tmp_path / "nopath.csv")])
  (tmp_path / "empty").mkdir()
  for bad in ("empty", "nothing_here"):
    with pytest.raises(cli.UserError):
      inference.expand_inputs([str(tmp_path / bad)])
