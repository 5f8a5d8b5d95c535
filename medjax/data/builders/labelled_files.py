"""The mechanism every builder shares: list the labelled files, check them all, then write.

The datasets of the five papers differ only in how their files and labels are listed: one
folder per class (Kermany, Kvasir, ImageCLEF 2016 training set), list files (MIT
Indoor-67) or label tables (IRMA CSVs, ImageCLEF ground-truth files). A subclass turns its
listing into :class:`Entry` objects per split, recording what it could not read in a
:class:`Listing` (unparseable rows, duplicate ids). This base then adds missing and
undecodable files and either fails with ONE error naming every problem or, with
``on_bad_file='skip'``, drops and counts them (``info.metadata['skipped']``), so that a long
run neither dies on image 9,000 nor silently trains on a broken file. Encoded bytes are
stored unchanged where TensorFlow decodes them as a viewer shows them (TIFF and greyscale
of 10-14 bits in 16 are stored as PNG: :mod:`medjax.data.images`); decoding and colour are
handled once, in :mod:`medjax.data.ops`.
"""
import abc
import csv
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from medjax.data import images, validate


@dataclasses.dataclass(frozen=True)
class Entry:
  """One example: its image file, unique id, label and any dataset-specific text features.

  ``label`` is a class index, or for multi-label datasets a sequence of 0/1 per class.
  ``where`` says where the listing named the file ("train_codes_02.csv:17"), for messages.
  """
  path: Path
  id: str
  label: Any
  extra: tuple[tuple[str, str], ...] = ()
  where: str = ""


class Listing:
  """The entries of a dataset, per split, and the problems met while listing them.

  Ids must be unique over the whole dataset (a test id that is also a training id would
  leak): every occurrence of a repeated id is dropped and reported once, since which
  occurrence is right cannot be known.
  """

  def __init__(self):
    self._entries: dict[str, list[Entry]] = {}
    self._problems: list[validate.Problem] = []
    self._first_seen: dict[str, str] = {}
    self._repeated: dict[str, list[str]] = {}

  def split(self, name: str) -> None:
    """Declares split ``name`` so that it exists even if nothing valid is listed in it."""
    self._entries.setdefault(name, [])

  def add(self, split: str, entry: Entry) -> None:
    self.split(split)
    where = entry.where or str(entry.path)
    if entry.id in self._first_seen:
      self._repeated.setdefault(entry.id, [self._first_seen[entry.id]]).append(where)
      return
    self._first_seen[entry.id] = where
    self._entries[split].append(entry)

  def bad_row(self, where: str, reason: str) -> None:
    self._problems.append(validate.Problem(where, reason))

  def result(self) -> tuple[dict[str, list[Entry]], list[validate.Problem]]:
    problems = list(self._problems)
    for key, places in self._repeated.items():
      problems.append(validate.Problem(places[0], f"id {key!r} is listed {len(places)} times "
                                                  f"({', '.join(places)}); all are left out"))
    entries = {split: [e for e in items if e.id not in self._repeated]
               for split, items in self._entries.items()}
    return entries, problems


def read_lines(path: Path) -> Iterator[tuple[str, str]]:
  """``(where, line)`` for each non-blank line of a text file, ``where`` = "name:number".

  CRLF endings and a UTF-8 BOM, both found in the organisers' files, are accepted; lines
  are stripped.
  """
  if not path.is_file():
    raise FileNotFoundError(f"expected the label file {path}")
  with path.open(newline="", encoding="utf-8-sig") as f:
    lines = f.read().splitlines()
  for number, line in enumerate(lines, start=1):
    if line.strip():
      yield f"{path.name}:{number}", line.strip()


_TOKEN_SEPARATORS = re.compile(r"[\s,;]+")


def read_rows(path: Path, delimiter: str | None = None) -> Iterator[tuple[str, list[str]]]:
  """``(where, fields)`` for each non-blank line of a label table (see :func:`read_lines`).

  ``delimiter`` None splits on any run of whitespace, commas and semicolons (ground-truth
  files whose separator is not documented); otherwise the csv module splits on it.
  """
  for where, line in read_lines(path):
    if delimiter is None:
      fields = [t for t in _TOKEN_SEPARATORS.split(line) if t]
    else:
      fields = [t.strip() for t in next(csv.reader([line], delimiter=delimiter))]
    yield where, fields


def resolve_image(folder: Path, name: str,
                  suffixes: tuple[str, ...] = validate.IMAGE_SUFFIXES) -> Path:
  """The file a label table names: ``name`` itself, or ``name`` plus the image suffix found.

  Ground-truth files often give bare image names ("12345" for "12345.jpg"). When nothing
  matches, the bare path is returned so that the error names what was looked for.
  """
  path = folder / name
  if path.suffix.lower() in suffixes:
    return path
  for suffix in suffixes:
    if (candidate := folder / f"{name}{suffix}").is_file():
      return candidate
  return path


def first_existing(root: Path, names: tuple[str, ...]) -> Path:
  """``root / name`` for the first of ``names`` that exists (archives renamed on re-upload)."""
  for name in names:
    if (root / name).exists():
      return root / name
  raise FileNotFoundError(f"expected one of {list(names)} in {root}")


class LabelledFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base: subclasses set ``CLASS_NAMES`` (or override ``class_names()``) and ``_list``.

  Keyword arguments beyond TFDS's: ``on_bad_file`` ('fail' or 'skip') and ``min_side``.
  ``MULTI_LABEL`` builders store ``"labels"`` (multi-hot float32), others ``"label"``.
  """
  CLASS_NAMES: tuple[str, ...] = ()
  DESCRIPTION = ""
  MULTI_LABEL = False

  def __init__(self, *, on_bad_file: str = "fail", min_side: int = validate.MIN_SIDE, **kwargs):
    self._on_bad_file = on_bad_file
    self._min_side = min_side
    super().__init__(**kwargs)

  def class_names(self) -> tuple[str, ...]:
    return self.CLASS_NAMES

  def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
    """Dataset-specific features filled from ``Entry.extra`` (text)."""
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    names = list(self.class_names())
    if self.MULTI_LABEL:
      label_key, label = "labels", tfds.features.Tensor(shape=(len(names),), dtype=np.float32)
    else:
      label_key, label = "label", tfds.features.ClassLabel(names=names)
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, None)),
            label_key: label,
            "id": tfds.features.Text(),
            **self._extra_features(),
        }),
        supervised_keys=("image", label_key),
        metadata=tfds.core.MetadataDict(),
    )

  def _root(self, dl_manager) -> Path:
    root = Path(dl_manager.manual_dir)
    if not root.is_dir():
      raise validate.MissingSource(
          f"{type(self).__name__}: the raw archive folder {root} does not exist.\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return root

  @abc.abstractmethod
  def _list(self, root: Path) -> Listing:
    """Lists every split's entries below ``root``; raises only if the layout is unusable."""

  def _check_file(self, path: Path) -> tuple[validate.Problem | None, str | None]:
    """``(problem, PIL mode)`` of one file; decodes it fully (see :mod:`validate`)."""
    return validate.check_image(path, self._min_side)

  def _encoded(self, path: Path):
    """What the ``image`` feature stores for ``path``: the file's own bytes where TensorFlow
    decodes them as they are, else lossless PNG (TIFF; greyscale of 10-14 bits scaled to 16
    bits: :func:`medjax.data.images.encoded`)."""
    return images.encoded(path)

  def _source_name(self, root: Path) -> str:
    """What messages call the dataset's files (its folder; a CSV where one lists them)."""
    return str(root)

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    entries, problems = self._list(root).result()
    report = validate.Report(problems=problems)
    for items in entries.values():
      for entry in items:
        if not entry.path.is_file():
          listed = f" (listed at {entry.where})" if entry.where else ""
          report.add(validate.Problem(str(entry.path), f"is missing{listed}"), None)
        else:
          report.add(*self._check_file(entry.path))
    skipped = report.raise_or_skip(self._on_bad_file, self._source_name(root))
    self.info.metadata["skipped"] = sorted(relative(p, root) for p in skipped)
    self.info.metadata["image_kinds"] = validate.mode_histogram(report.modes)
    kept = {split: [e for e in items if str(e.path) not in skipped]
            for split, items in entries.items()}
    for split in sorted(split for split, items in kept.items() if not items):
      # TFDS cannot write an empty split; the pipeline does without one (a validation
      # holdout from train instead of val; no test measures without test).
      logging.warning("split %r of %s has no images (a small class drawn, or its files "
                      "skipped as bad): it is left out", split, self._source_name(root))
    return {split: self._generate_examples(items) for split, items in kept.items() if items}

  def _generate_examples(self, entries):
    label_key = "labels" if self.MULTI_LABEL else "label"
    for entry in entries:
      label = np.asarray(entry.label, np.float32) if self.MULTI_LABEL else entry.label
      yield entry.id, {"image": self._encoded(entry.path), label_key: label, "id": entry.id,
                       **dict(entry.extra)}


def relative(path: str, root: Path) -> str:
  """``path`` relative to ``root`` where it lies below it, else as given."""
  try:
    return str(Path(path).relative_to(root))
  except ValueError:
    return path
