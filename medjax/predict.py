"""Classifies new images with a finished run of either pipeline.

  python -m medjax.predict --workdir=W [--out=FILE.csv] INPUT ...

INPUT is an image file (DICOM included), a folder (every image below it) or a CSV with a
``path`` column (relative to the CSV; a ``label`` column, if any, is copied to the output
and must name the run's classes). Each image goes through the run's own evaluation
preprocessing and model (:mod:`medjax.inference`); the CSV (stdout without ``--out``) has
one row per image: ``path``, [``label``,] ``predicted``, ``score/<class>`` per class
(probabilities summing to 1, calibrated where the run calibrated its SVM; one-vs-all
sigmoids for multi-label runs) and ``error``, which says why an unreadable image has no
prediction while the others still get theirs. If no image could be read at all, the CSV is
still written but the command ends with one error line and exit status 2.
"""
import csv
import io
import sys
from pathlib import Path

from absl import flags

from medjax import cli

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags, defined only when it runs: tests import several commands."""
  flags.DEFINE_string("workdir", None, "Workdir of a finished run.", required=True, flag_values=fv)
  flags.DEFINE_string("out", None, "Output CSV (default: stdout).", flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "Images per jitted call.", lower_bound=1, flag_values=fv)


def table(run, paths, labels, scores, errors) -> str:
  from medjax import inference
  known = set(run.class_names)
  for path, label in zip(paths, labels):
    unknown = [c for c in filter(None, label.split("|")) if c not in known]
    if unknown:
      raise cli.UserError(f"{path}: label {label!r} names class(es) {unknown} the run does not "
                          f"have; its classes are {list(run.class_names)}")
  with_labels = any(labels)
  buffer = io.StringIO()
  out = csv.writer(buffer, lineterminator="\n")
  out.writerow(["path", *(["label"] if with_labels else []), "predicted",
                *(f"score/{c}" for c in run.class_names), "error"])
  for path, label, row, name, error in zip(paths, labels, scores,
                                           inference.predicted(run, scores), errors):
    values = ["" if error else repr(float(s)) for s in row]
    out.writerow([str(path), *([label] if with_labels else []), name, *values, error])
  return buffer.getvalue()


def main(argv):
  from medjax.data import tf_runtime
  tf_runtime.configure()
  from medjax import inference
  from medjax.atomic import save_text
  if len(argv) < 2:
    raise cli.UserError("give at least one INPUT (image, folder or CSV)")
  if FLAGS.out:  # Before the images are read, not after.
    cli.writable("out", FLAGS.out, folder=False)
  paths, labels = inference.expand_inputs(argv[1:])
  run = inference.load(FLAGS.workdir)
  scores, errors = inference.predict_files(run, paths, FLAGS.batch_size)
  text = table(run, paths, labels, scores, errors)
  if FLAGS.out:
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    save_text(Path(FLAGS.out), text)
  else:
    sys.stdout.write(text)
  failed = sum(bool(e) for e in errors)
  if failed == len(paths):  # Nothing predicted: a mistake (wrong files), not a partial result.
    raise cli.UserError(f"none of the {failed} input image(s) could be read ({paths[0]} "
                        f"{errors[0]}); see the error column")
  if failed:
    print(f"medjax.predict: {failed} of {len(paths)} image(s) could not be read; see the "
          f"error column", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main, "medjax.predict", define_flags)
