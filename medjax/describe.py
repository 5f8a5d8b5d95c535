r"""Prints what a dataset holds, as JSON, before a long run is started on it.

  python -m medjax.describe --dataset=chest_xray --data_dir=../shared/data \
      [--tfds_dir=DIR] [--on_bad_file=skip]

Prepares the dataset if needed (the same builder and folders as training uses), then
prints the examples per split and per class, the image kinds found (grayscale, 16-bit,
RGB, ...) and how many bad files were skipped (:mod:`medjax.data.describe`). ``--dataset``
takes what ``config.data.name`` takes: a dataset name, or a folder or CSV by path. Errors
name this command's flags.
"""
import contextlib
import json
import sys

from absl import flags

from medjax import cli

FLAGS = flags.FLAGS
# The data library's words for its settings -> this command's flags.
FLAG_NAMES = {"config.data.name=": "--dataset=", "config.data.on_bad_file='skip'":
              "--on_bad_file=skip", "config.data.manual_dir": "--data_dir",
              "config.data.tfds_dir": "--tfds_dir"}


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("dataset", None, "What config.data.name takes: a dataset name such as "
                      "chest_xray or irma/anatomy9, or a folder or CSV by path.", required=True,
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "config.data.manual_dir: the folder holding "
                      "<dataset>/ with the raw files (default $MEDJAX_DATA_DIR, else "
                      "~/medjax_data).", flag_values=fv)
  flags.DEFINE_string("tfds_dir", None, "config.data.tfds_dir: where prepared records go "
                      "(default $MEDJAX_TFDS_DIR, else ~/tensorflow_datasets).", flag_values=fv)
  flags.DEFINE_enum("on_bad_file", "fail", ["fail", "skip"],
                    "Fail naming every bad file, or skip and count them.", flag_values=fv)


def describe_dataset(dataset: str, data_dir: str | None, tfds_dir: str | None,
                     on_bad_file: str) -> dict:
  """What the command prints: the dataset prepared (as training prepares it), then
  described."""
  from medjax.data import builders
  from medjax.data.describe import describe
  # TFDS reports preparation on stdout; keep stdout for the JSON alone.
  with contextlib.redirect_stdout(sys.stderr):
    builder = builders.get_builder(dataset, manual_dir=data_dir, tfds_dir=tfds_dir,
                                   on_bad_file=on_bad_file)
  return describe(builder)


def in_flags(message: str) -> str:
  """A data library error as this command says it, with its flag names."""
  for key, flag in FLAG_NAMES.items():
    message = message.replace(key, flag)
  return message


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; name the dataset with --dataset")
  try:
    described = describe_dataset(FLAGS.dataset, FLAGS.data_dir, FLAGS.tfds_dir,
                                 FLAGS.on_bad_file)
  except cli.UserError as e:
    raise cli.UserError(in_flags(str(e))) from None
  json.dump(described, sys.stdout, indent=2)
  sys.stdout.write("\n")


if __name__ == "__main__":
  cli.run(main, "medjax.describe", define_flags)
