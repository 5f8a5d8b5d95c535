"""Comparing finished runs on the same test examples: one row of headline measures with
their intervals per run, and paired tests for every pair of runs.

Runs are matched example by example through the ``id`` column of their predictions CSVs;
runs whose examples (ids, or the label of an id) or classes differ, or that list an id
twice, cannot be compared pairwise and are refused. Correctness is compared with McNemar's
exact test (exact match for multi-label runs); ROC AUC with DeLong's test for binary tasks,
and for multi-class tasks (macro one-vs-rest AUC, which DeLong's test does not cover) with
a paired stratified bootstrap. Every p-value is two-sided and per test, not adjusted for
the several tests of a comparison (the report says how many). The rows' measures and
intervals are read from the runs' own ``results.json``; the tests' AUCs are computed from
the matched predictions of the split compared.
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


def align(runs: list[Run], purpose: str = "paired tests need the same examples") -> list[Run]:
  """The runs with their predictions in the first run's example order; ``ValueError``
  when their examples or classes differ (``purpose`` ends that message: the caller's why)."""
  first = runs[0].predictions
  order = {i: n for n, i in enumerate(first.ids)}
  for run in runs:  # A repeated id would be paired with whichever copy came last.
    if len(set(run.predictions.ids)) != len(run.predictions.ids):
      raise ValueError(f"run {run.name} lists {len(run.predictions.ids)} predictions but "
                       f"{len(set(run.predictions.ids))} distinct ids: examples cannot be "
                       f"matched by id")
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
          f"second): {purpose}")
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


# What runs written before ``<split>/intervals/method`` was recorded used for every interval.
OLD_INTERVALS = "95 % intervals: percentile bootstrap (recorded before the method was named)"


def rows(runs: list[Run], split: str = "test") -> list[dict]:
  """One dict per run: name, examples, ``<measure>``, ``<measure> low``/``high`` and
  ``intervals`` (how the run computed them)."""
  out = []
  for run in runs:
    row = {"run": run.name, "workdir": str(run.workdir), "examples": len(run.predictions.ids)}
    for key in headline_keys(run.predictions):
      full = f"{split}/{key}"
      for suffix, label in (("", ""), ("/ci95_low", " low"), ("/ci95_high", " high")):
        value = run.results.get(full + suffix)
        row[key + label] = float(value) if isinstance(value, (int, float)) else float("nan")
    row["intervals"] = run.results.get(f"{split}/intervals/method", OLD_INTERVALS)
    out.append(row)
  return out


def correct(p: predictions_lib.Predictions) -> np.ndarray:
  return ((p.predicted == p.labels).all(1) if p.multi_label else p.predicted == p.labels)


def pair_tests(a: Run, b: Run) -> dict:
  """McNemar on correctness and a paired AUC test of two aligned runs; the AUCs are those
  of the predictions tested (the split compared), not read from ``results.json``."""
  pa, pb = a.predictions, b.predictions
  mc = paired.mcnemar_exact(correct(pa), correct(pb))
  out = {"run a": a.name, "run b": b.name, "a only correct": mc["a_only_correct"],
         "b only correct": mc["b_only_correct"], "McNemar p": mc["p_value"]}
  nan = float("nan")
  if pa.multi_label or len(np.unique(pa.labels)) < 2:
    why = "multi-label" if pa.multi_label else "one class only"
    out.update({"AUC test": f"none ({why})", "AUC a": nan, "AUC b": nan,
                "AUC a - b low": nan, "AUC a - b high": nan, "AUC p": nan})
    return out
  if len(pa.class_names) == 2:
    d = paired.delong(pa.labels == 1, pa.scores[:, 1], pb.scores[:, 1])
    test = "DeLong"
  else:
    d = bootstrap.paired_auc_difference(pa.labels, pa.scores, pb.scores)
    test = f"paired bootstrap ({bootstrap.RESAMPLES})"
  # The difference's 95 % interval beside its p-value: how large a difference the data
  # allow, which a p-value alone does not say.
  out.update({"AUC test": test, "AUC a": d["auc_a"], "AUC b": d["auc_b"],
              "AUC a - b low": d["difference/ci95_low"],
              "AUC a - b high": d["difference/ci95_high"], "AUC p": d["p_value"]})
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


def _cell(value, p_value: bool = False) -> str:
  """A table cell; p-values below 0.0001 read ``< 0.0001``, since a printed 0 (an underflow
  or a bootstrap's resolution) would claim certainty no finite test gives."""
  if isinstance(value, float):
    if np.isnan(value):
      return "-"
    if p_value:
      return "< 0.0001" if value < 1e-4 else f"{value:.4f}"
    return f"{value:.3g}" if abs(value) < 1e-3 else f"{value:.4f}"
  return str(value)


def _measure_cell(r: dict, m: str) -> str:
  """``value (low-high)``; the interval only beside a value it belongs to."""
  if np.isnan(r[m]) or np.isnan(r[m + " low"]):
    return _cell(r[m])
  return f"{r[m]:.4f} ({r[m + ' low']:.4f}-{r[m + ' high']:.4f})"


def _notes(rows_: list[dict], tests: list[dict]) -> list[str]:
  """What the intervals and p-values are, and how many tests the table holds."""
  methods = {}
  for r in rows_:
    methods.setdefault(r.get("intervals", OLD_INTERVALS), []).append(r["run"])
  lines = [f"{m}" + (f" (runs {', '.join(names)})" if len(methods) > 1 else "") + "."
           for m, names in methods.items()]
  if tests:
    n = 2 * len(tests) if any(not np.isnan(t["AUC p"]) for t in tests) else len(tests)
    lines.append("p-values are two-sided: McNemar's exact (conditional binomial) test on "
                 "correctness and the named AUC test, each per test, not adjusted for the "
                 f"{n} tests of this table" + (
                     f" (Holm: the k-th smallest must be below 0.05 / ({n} - k + 1))."
                     if n > 1 else "."))
  return lines


def markdown(rows_: list[dict], tests: list[dict]) -> str:
  measures = [k for k in rows_[0] if k not in ("run", "workdir", "examples", "intervals")
              and not k.endswith((" low", " high"))]
  lines = ["| run | examples | " + " | ".join(f"{m} (95 % CI)" for m in measures) + " |",
           "|---" * (len(measures) + 2) + "|"]
  for r in rows_:
    cells = [_measure_cell(r, m) for m in measures]
    lines.append(f"| {r['run']} | {r['examples']} | " + " | ".join(cells) + " |")
  if tests:
    keys = list(tests[0])
    lines += ["", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    lines += ["| " + " | ".join(_cell(t[k], k.endswith(" p")) for k in keys) + " |"
              for t in tests]
  lines += [""] + _notes(rows_, tests)
  return "\n".join(lines) + "\n"


def to_csv(records: list[dict]) -> str:
  buffer = io.StringIO()
  if records:
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
  return buffer.getvalue()
