"""``predictions/<split>.csv``: one row per example, so that every number of a run can be
recomputed from it and two runs on the same examples matched row by row (by ``id``).

Single-label columns: ``id``, ``label`` and ``predicted`` (class names), then one
``score/<class>`` per class. Multi-label: ``id``, then ``label/<l>`` and ``predicted/<l>``
(0 or 1) and ``score/<l>`` for every label. Scores are written with ``repr`` (the
shortest text that reads back as the same float), so recomputed metrics match exactly.
"""
import csv
import dataclasses
import io
from pathlib import Path

import numpy as np

from medjax.atomic import save_text


@dataclasses.dataclass
class Predictions:
  ids: list[str]
  labels: np.ndarray       # (n,) class indices, or (n, L) 0/1 for multi-label.
  predicted: np.ndarray    # Same shape as labels.
  scores: np.ndarray       # (n, k) float64.
  class_names: tuple[str, ...]
  multi_label: bool


def write(path: Path, p: Predictions) -> None:
  names = p.class_names
  if p.multi_label:
    header = (["id"] + [f"label/{c}" for c in names] + [f"predicted/{c}" for c in names]
              + [f"score/{c}" for c in names])
  else:
    header = ["id", "label", "predicted"] + [f"score/{c}" for c in names]
  buffer = io.StringIO()
  out = csv.writer(buffer, lineterminator="\n")
  out.writerow(header)
  for i, example_id in enumerate(p.ids):
    if p.multi_label:
      first = [int(v) for v in p.labels[i]] + [int(v) for v in p.predicted[i]]
    else:
      first = [names[int(p.labels[i])], names[int(p.predicted[i])]]
    out.writerow([example_id, *first, *(repr(float(s)) for s in p.scores[i])])
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  save_text(path, buffer.getvalue())


def read(path: Path) -> Predictions:
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  header, body = rows[0], rows[1:]
  names = tuple(h.removeprefix("score/") for h in header if h.startswith("score/"))
  k = len(names)
  scores = np.array([[float(v) for v in r[-k:]] for r in body], np.float64).reshape(-1, k)
  ids = [r[0] for r in body]
  multi_label = "label" not in header
  if multi_label:
    labels = np.array([[int(v) for v in r[1:1 + k]] for r in body]).reshape(-1, k)
    predicted = np.array([[int(v) for v in r[1 + k:1 + 2 * k]] for r in body]).reshape(-1, k)
  else:
    index = {c: i for i, c in enumerate(names)}
    labels = np.array([index[r[1]] for r in body], int)
    predicted = np.array([index[r[2]] for r in body], int)
  return Predictions(ids, labels, predicted, scores, names, multi_label)
