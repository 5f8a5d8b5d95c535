"""What a dataset archive holds, for ``python -m medjax.describe``: the examples per split
and per class, the image kinds found (grayscale, 16-bit, RGB, ...) and the bad files
skipped. Multi-label datasets count, per class, the examples carrying that label, plus
``(none)`` for all-negative examples.
"""
import numpy as np
import tensorflow_datasets as tfds

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
  """The JSON-ready summary of a prepared dataset."""
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

