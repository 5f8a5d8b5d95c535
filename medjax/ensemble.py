"""Average the calibrated probabilities of several finished runs into a run of its own.

  python -m medjax.ensemble --workdirs=W1,W2[,...] --workdir=OUT

Paper 3's ensemble rows (fine-tuned AlexNet and GoogLeNet): every run's
``predictions/<split>.csv`` holds its calibrated probabilities (softmax after the
temperature fitted on validation, or the SVM's temperature-scaled scores; one-vs-all
sigmoid heads' per-class probabilities, whose mean gets no log loss or ECE); their mean,
example by example (matched by id; runs on different examples or classes are refused),
is evaluated as any run's: ``OUT/predictions/``, ``plots/``, ``results.json`` (the same
keys, with ``ensemble/members``) and ``report.html``. Nothing is refitted, so validation
predictions, where every member has them, are averaged and reported too.
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
from absl import flags

from medjax import cli

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  # Required, but checked in main (cli.finished_runs), so that runs given as arguments are
  # told to use --workdirs= rather than only that it is missing.
  flags.DEFINE_list("workdirs", None, "Finished runs whose probabilities are averaged (two "
                    "or more). (required)", flag_values=fv)
  flags.DEFINE_string("workdir", None, "Where the ensemble's predictions, results.json and "
                      "report.html go.", required=True, flag_values=fv)


# All an ensemble writes: a folder holding anything else is another run's, never overwritten.
OUTPUTS = {"predictions", "plots", "results.json", "report.html"}


def average(workdirs, split: str):
  """The members' predictions of ``split`` aligned by id, and their mean scores."""
  from medjax.eval import comparison
  runs = comparison.align([comparison.load(Path(w), split) for w in workdirs],
                          "an ensemble averages each example's scores over the same examples")
  first = runs[0].predictions
  if first.multi_label:
    raise ValueError("multi-label runs are not ensembled")
  scores = np.mean([r.predictions.scores for r in runs], axis=0)
  return dataclasses.replace(first, scores=scores, predicted=scores.argmax(1))


def are_distributions(scores: np.ndarray) -> bool:
  """Whether every row is a probability distribution (as the CSV rounds it); why: members
  with one-vs-all sigmoid heads give rows that need not sum to one, and log loss and ECE
  of their mean would mean nothing."""
  return bool(np.all(scores >= 0) and np.allclose(scores.sum(1), 1.0, atol=1e-3))


def ensemble(workdirs, out: Path) -> dict:
  from medjax.eval import evaluation, report
  from medjax.eval import predictions as predictions_lib
  from medjax.eval import results as results_lib
  out = Path(out)
  members = [str(Path(w).resolve()) for w in workdirs]
  config = {"pipeline": "ensemble", "members": members}
  if out.exists() and not out.is_dir():
    raise ValueError(f"--workdir={out} is a file; give a new folder for the ensemble")
  others = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS) if out.is_dir() else []
  if others:
    listed = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
    raise ValueError(f"--workdir={out} holds files an ensemble does not write ({listed}): "
                     f"another run's folder; use a new one")
  out.mkdir(parents=True, exist_ok=True)
  if (out / "results.json").exists():
    stored = json.loads((out / "results.json").read_text())
    if stored.get("config") == config:
      return stored
    raise ValueError(f"{out / 'results.json'} holds another run; use a new --workdir")
  results = {"ensemble/members": len(members)}
  counts = {}
  splits = ["test"] + (["val"] if all((Path(w) / "predictions" / "val.csv").is_file()
                                      for w in workdirs) else [])
  for split in reversed(splits):  # val first, as runs report it.
    p = average(workdirs, split)
    measures = evaluation.final(out, split, p.ids, p.labels, p.scores, p.class_names,
                                probabilities=are_distributions(p.scores))
    results.update({f"{split}/{k}": v for k, v in measures.items()})
    results[f"{split}/num_examples"] = len(p.ids)
    counts[split] = {c: int(np.sum(p.labels == i)) for i, c in enumerate(p.class_names)}

  def write_report(r):
    test = predictions_lib.read(out / "predictions" / "test.csv")
    report.write(out, r, counts, evaluation.confidently_wrong(test), {})
  return results_lib.finish(out, results, config, write_report=write_report)


def main(argv):
  workdirs = cli.finished_runs(argv, FLAGS.workdirs)
  try:
    results = ensemble(workdirs, Path(FLAGS.workdir))
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  from medjax.eval import writers
  print("\n".join(f"{k}\t{v:.4f}" for k, v in sorted(writers.headline(results).items())))


if __name__ == "__main__":
  cli.run(main, "medjax.ensemble", define_flags)
