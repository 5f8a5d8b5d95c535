r"""Prints what a dataset archive holds, as JSON, before a long run is started on it.

  python -m medjax.data.describe --dataset=chest_xray --data_dir=../shared/data \
      [--tfds_dir=DIR] [--on_bad_file=skip]

Prepares the dataset if needed (the same builder and folders as training uses), then
reports the examples per split and per class, the image kinds found (grayscale, 16-bit,
RGB, ...) and how many bad files were skipped. Multi-label datasets count, per class, the
examples carrying that label, plus ``(none)`` for all-negative examples.
"""
import contextlib
import json
import sys

from absl import app, flags
import numpy as np
import tensorflow_datasets as tfds

from medjax.data import builders

_DATASET = flags.DEFINE_string("dataset", None,
                               "config.data.name, e.g. chest_xray or irma/anatomy9.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding <dataset>/ with the raw files "
                                "(default $MEDJAX_DATA_DIR, else ~/medjax_data).")
_TFDS_DIR = flags.DEFINE_string("tfds_dir", None, "Where prepared records go (default "
                                "$MEDJAX_TFDS_DIR, else ~/tensorflow_datasets).")
_ON_BAD_FILE = flags.DEFINE_enum("on_bad_file", "fail", ["fail", "skip"],
                                 "Fail naming every bad file, or skip and count them.")

NONE = "(none)"


def class_counts(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, int]:
  """Examples per class name in ``split``, reading labels only (images are not decoded)."""
  names = list(builder.class_names())
  multi_label = "labels" in builder.info.features
  key = "labels" if multi_label else "label"
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()}).map(lambda ex: ex[key])
  labels = np.asarray(list(ds.as_numpy_iterator()))
  if not multi_label:
    return {n: int(c) for n, c in zip(names, np.bincount(labels, minlength=len(names)))}
  labels = labels.reshape(-1, len(names))
  counts = {n: int(c) for n, c in zip(names, (labels > 0).sum(0))}
  counts[NONE] = int((labels.sum(1) == 0).sum())
  return counts


def describe(builder: tfds.core.DatasetBuilder) -> dict:
  metadata = dict(builder.info.metadata or {})
  skipped = list(metadata.get("skipped", []))
  summary = {
      "dataset": builder.name,
      "config": builder.builder_config.name if builder.builder_config else None,
      "classes": list(builder.class_names()),
      "splits": {split: {"examples": info.num_examples, "per_class": class_counts(builder, split)}
                 for split, info in sorted(builder.info.splits.items())},
      "image_kinds": metadata.get("image_kinds", {}),
      "skipped": len(skipped),
      "skipped_files": skipped,
  }
  if "excluded" in metadata:
    summary["excluded"] = metadata["excluded"]
  return summary


def main(argv):
  del argv
  # TFDS reports preparation on stdout; keep stdout for the JSON alone.
  with contextlib.redirect_stdout(sys.stderr):
    builder = builders.get_builder(_DATASET.value, manual_dir=_DATA_DIR.value,
                                   tfds_dir=_TFDS_DIR.value, on_bad_file=_ON_BAD_FILE.value)
  json.dump(describe(builder), sys.stdout, indent=2)
  sys.stdout.write("\n")


if __name__ == "__main__":
  app.run(main)
