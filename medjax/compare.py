"""Compare finished runs evaluated on the same test examples.

  python -m medjax.compare --workdirs=W1,W2[,...] [--split=test] [--out=DIR]

``--workdirs`` names two or more finished runs, comma-separated, as ``medjax.ensemble``'s
does. Prints, and writes as ``comparison.md``, ``runs.csv`` and ``pairs.csv`` in ``--out``
(default: ``comparison/`` beside the first of ``--workdirs``), one row per run with its
headline measures and 95 % intervals, then McNemar's exact test on correctness and a paired
AUC test (DeLong's for two classes) for every pair of runs. Runs whose test examples differ
(matched by id) are refused: exit status 2 with one line saying why.
"""
from pathlib import Path

from absl import flags

from medjax import cli
from medjax.atomic import save_text

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  # Required, but checked in main rather than by absl, so that runs given the old way (as
  # arguments) are told to use --workdirs= instead of only that it is missing.
  flags.DEFINE_list("workdirs", None, "Finished runs to compare (two or more). (required)",
                    flag_values=fv)
  flags.DEFINE_string("split", "test", "Split of the runs (test, val) whose predictions are "
                      "compared.", flag_values=fv)
  flags.DEFINE_string("out", None, "Folder for comparison.md, runs.csv and pairs.csv "
                      "(default: comparison/ beside the first of --workdirs).", flag_values=fv)


def check_split(workdirs, split: str) -> None:
  """A --split a run has no predictions for is named with the splits it has (a typo)."""
  for workdir in workdirs:
    have = sorted(p.stem for p in (workdir / "predictions").glob("*.csv"))
    if have and split not in have:
      raise cli.UserError(f"--split={split}: {workdir} holds no predictions/{split}.csv; its "
                          f"splits are {have}")


def main(argv):
  workdirs = cli.finished_runs(argv, FLAGS.workdirs)
  from medjax.eval import comparison
  out = Path(FLAGS.out) if FLAGS.out else workdirs[0].resolve().parent / "comparison"
  cli.writable("out", out, folder=True)
  check_split(workdirs, FLAGS.split)
  try:
    rows, tests = comparison.compare(workdirs, FLAGS.split)
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  text = comparison.markdown(rows, tests)
  out.mkdir(parents=True, exist_ok=True)
  save_text(out / "comparison.md", text)
  save_text(out / "runs.csv", comparison.to_csv(rows))
  save_text(out / "pairs.csv", comparison.to_csv(tests))
  print(text, end="")
  print(f"\nwritten: {out / 'comparison.md'}, {out / 'runs.csv'}, {out / 'pairs.csv'}")


if __name__ == "__main__":
  cli.run(main, "medjax.compare", define_flags)
