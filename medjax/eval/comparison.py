"""Comparing finished runs on the same test examples: one row of headline measures with
their intervals per run, and paired tests for every pair of runs.

Runs are matched example by example through the ``id`` column of their predictions CSVs;
runs whose examples (ids, or the label of an id) or classes differ cannot be compared
pairwise and are refused. Correctness is compared with McNemar's exact test (exact match
for multi-label runs); ROC AUC with DeLong's test for binary tasks, and for multi-class
tasks (macro one-vs-rest AUC, which DeLong's test does not cover) with a paired stratified
bootstrap. Every measure is read from the runs' own ``results.json``.
"""
import csv
import dataclasses
import io
import itertools
import json
from pathlib import Path

import numpy as np

from medjax.eval import bootstrap, paired
from medjax.eval import predictions as predictions_lib


@dataclasses.dataclass
class Run:
  name: str
  workdir: Path
  results: dict
  predictions: predictions_lib.Predictions


def load(workdir: Path, split: str = "test") -> Run:
  """A finished run's ``results.json`` and ``predictions/<split>.csv``; ``ValueError``
  naming what is missing otherwise."""
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise ValueError(f"{workdir} is not a directory")
  results_path, csv_path = workdir / "results.json", workdir / "predictions" / f"{split}.csv"
  if not results_path.is_file():
    raise ValueError(f"{workdir} holds no results.json: not a finished run")
  if not csv_path.is_file():
    hint = (" (a run over several seeds: compare its seed_<s> folders)"
            if any(workdir.glob("seed_*")) else " (a run from before predictions were written?)")
    raise ValueError(f"{workdir} holds no predictions/{split}.csv{hint}")
  return Run(workdir.name, workdir, json.loads(results_path.read_text()),
             predictions_lib.read(csv_path))


def align(runs: list[Run]) -> list[Run]:
  """The runs with their predictions in the first run's example order; ``ValueError``
  when their examples or classes differ."""
  first = runs[0].predictions
  order = {i: n for n, i in enumerate(first.ids)}
  for run in runs[1:]:
    p = run.predictions
    if p.class_names != first.class_names:
      raise ValueError(f"runs {runs[0].name} and {run.name} have different classes "
                       f"({list(first.class_names)} vs {list(p.class_names)})")
    if set(p.ids) != set(order) or len(p.ids) != len(first.ids):
      only_a, only_b = len(set(order) - set(p.ids)), len(set(p.ids) - set(order))
      raise ValueError(
          f"runs {runs[0].name} and {run.name} were evaluated on different examples "
          f"({len(first.ids)} vs {len(p.ids)}; {only_a} only in the first, {only_b} only in the "
          f"second): paired tests need the same test set")
    perm = np.argsort([order[i] for i in p.ids])
    p = dataclasses.replace(p, ids=[p.ids[i] for i in perm], labels=p.labels[perm],
                            predicted=p.predicted[perm], scores=p.scores[perm])
    if not np.array_equal(p.labels, first.labels):
      raise ValueError(f"runs {runs[0].name} and {run.name} give the same examples different "
                       f"labels: they read different data")
    run.predictions = p
  return runs


def headline_keys(p: predictions_lib.Predictions) -> list[str]:
  if p.multi_label:
    return ["exact_match", "any_match", "hamming_similarity", "roc_auc"]
  keys = ["accuracy", "balanced_accuracy", "roc_auc"]
  if len(p.class_names) == 2:
    keys += [f"sensitivity/{p.class_names[1]}", f"specificity/{p.class_names[1]}"]
  return keys


def rows(runs: list[Run], split: str = "test") -> list[dict]:
  """One dict per run: name, examples, and ``<measure>``, ``<measure> low``/``high``."""
  out = []
  for run in runs:
    row = {"run": run.name, "workdir": str(run.workdir), "examples": len(run.predictions.ids)}
    for key in headline_keys(run.predictions):
      full = f"{split}/{key}"
      for suffix, label in (("", ""), ("/ci95_low", " low"), ("/ci95_high", " high")):
        value = run.results.get(full + suffix)
        row[key + label] = float(value) if isinstance(value, (int, float)) else float("nan")
    out.append(row)
  return out


def correct(p: predictions_lib.Predictions) -> np.ndarray:
  return ((p.predicted == p.labels).all(1) if p.multi_label else p.predicted == p.labels)


def pair_tests(a: Run, b: Run) -> dict:
  """McNemar on correctness and a paired AUC test of two aligned runs."""
  pa, pb = a.predictions, b.predictions
  mc = paired.mcnemar_exact(correct(pa), correct(pb))
  out = {"run a": a.name, "run b": b.name, "a only correct": mc["a_only_correct"],
         "b only correct": mc["b_only_correct"], "McNemar p": mc["p_value"]}
  if pa.multi_label:
    out.update({"AUC test": "none (multi-label)", "AUC a": float("nan"),
                "AUC b": float("nan"), "AUC p": float("nan")})
  elif len(pa.class_names) == 2:
    d = paired.delong(pa.labels == 1, pa.scores[:, 1], pb.scores[:, 1])
    out.update({"AUC test": "DeLong", "AUC a": d["auc_a"], "AUC b": d["auc_b"],
                "AUC p": d["p_value"]})
  else:
    d = bootstrap.paired_auc_difference(pa.labels, pa.scores, pb.scores)
    out.update({"AUC test": f"paired bootstrap ({bootstrap.RESAMPLES})",
                "AUC a": a.results.get("test/roc_auc", float("nan")),
                "AUC b": b.results.get("test/roc_auc", float("nan")), "AUC p": d["p_value"]})
  return out


def compare(workdirs, split: str = "test") -> tuple[list[dict], list[dict]]:
  """``(rows, pair tests)`` of the runs in ``workdirs``."""
  runs = align([load(w, split) for w in workdirs])
  names = [r.name for r in runs]
  if len(set(names)) < len(names):  # Same folder names: tell them apart by path.
    for r in runs:
      r.name = str(r.workdir)
  tests = [pair_tests(a, b) for a, b in itertools.combinations(runs, 2)]
  return rows(runs, split), tests


def _cell(value) -> str:
  if isinstance(value, float):
    return "-" if np.isnan(value) else (f"{value:.3g}" if value < 1e-3 else f"{value:.4f}")
  return str(value)


def markdown(rows_: list[dict], tests: list[dict]) -> str:
  measures = [k for k in rows_[0] if k not in ("run", "workdir", "examples")
              and not k.endswith((" low", " high"))]
  lines = ["| run | examples | " + " | ".join(f"{m} (95 % CI)" for m in measures) + " |",
           "|---" * (len(measures) + 2) + "|"]
  for r in rows_:
    cells = [f"{r[m]:.4f} ({r[m + ' low']:.4f}-{r[m + ' high']:.4f})"
             if not np.isnan(r[m + " low"]) else _cell(r[m]) for m in measures]
    lines.append(f"| {r['run']} | {r['examples']} | " + " | ".join(cells) + " |")
  if tests:
    keys = list(tests[0])
    lines += ["", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    lines += ["| " + " | ".join(_cell(t[k]) for k in keys) + " |" for t in tests]
    if len(tests) > 1:
      lines += ["", f"p-values are per pair, not adjusted for the {len(tests)} comparisons "
                f"(Holm: the k-th smallest must be below 0.05 / ({len(tests)} - k + 1))."]
  return "\n".join(lines) + "\n"


def to_csv(records: list[dict]) -> str:
  buffer = io.StringIO()
  if records:
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
  return buffer.getvalue()
