"""A user's own dataset given by its path (``config.data.name=/data/my_study``).

Three layouts are recognised, so that no folder needs renaming:

* ``PATH/<split>/<class>/<image>`` (images at any depth below their class, as below) when
  the top folders are ``train`` and some of ``val`` and ``test``: the splits are taken as
  they are (``val`` is used as the validation split by :mod:`medjax.data.pipeline`);
* ``PATH/<class>/<image>``, images at any depth below their class folder (a folder per
  patient or study inside each class is common): no splits; a stratified train/val/test
  split is drawn from ``split_seed`` with ``split_fractions`` (per class, rounded; by
  sorted id, so it does not depend on listing order) and written to the workdir as a CSV
  a later run can be given. The first folder below a class is a group (a patient): a
  group's images go to one split together, since images of one patient on both sides
  would measure recognising the patient (so would a validation holdout: see
  ``group_of``); given splits that put a group on both sides are warned about;
* ``PATH.csv`` with columns ``path`` (relative to the CSV, or absolute), ``label`` (several
  labels separated by ``|`` make the task multi-label) and optional ``split``, ``id`` and
  ``group`` (e.g. the patient); without a split the stratified split above is drawn.

Hidden files (``.DS_Store``, macOS's ``._*`` companions) are not images. Images may be
DICOM (``.dcm``, ``.dicom``, or a PACS export's files without a suffix, found by content;
converted as :mod:`dicom_folder` does) or any image format of :mod:`medjax.data.validate`,
grey or colour, 8 or 16 bit. Classes are the sorted class
names found, so their order depends only on the names; it is stored in the prepared copy.
Example ids are paths relative to the folder (or as the CSV writes them, unless its ``id``
column names them): the same images as a folder or as a CSV are the same examples, and the
``data_split.csv`` a run writes keeps its ids, so runs on it pair with that run in
``medjax.compare``.
"""
import collections
import csv
import logging
from pathlib import Path, PureWindowsPath

from medjax import cli
from medjax.data import validate
from medjax.data.builders import class_folders, dicom_folder
from medjax.data.builders.class_folders import list_class_folders
from medjax.data.builders.labelled_files import Entry, LabelledFilesBuilder, Listing, relative
from medjax.data.splits import stratified_split

SUFFIXES = validate.IMAGE_SUFFIXES + (".dcm", ".dicom")
SPLITS = ("train", "val", "test")
# Split folder names as they are found in the wild -> the split they are.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test"}
MULTI_LABEL_SEPARATOR = "|"


class DatasetError(cli.UserError, ValueError):
  """A dataset path that cannot be used as given; the message says what to change."""


def is_csv(source: Path) -> bool:
  return source.suffix.lower() == ".csv"


def _images(folder: Path, deep: bool = False) -> list[Path]:
  """Image files in ``folder`` (``deep``: at any depth), hidden files and folders left out."""
  found = folder.rglob("*") if deep else folder.iterdir()
  return sorted(p for p in found if p.is_file() and is_image(p)
                and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def is_image(path: Path) -> bool:
  """An image file by its suffix, or a DICOM file by its content (``IM000001``)."""
  return path.suffix.lower() in SUFFIXES or dicom_folder.is_dicom(path)


def read_table(source: Path, required=("path", "label")) -> list[dict]:
  """Rows of a CSV as dicts, with ``where`` = "file.csv:line" for messages; ``required``:
  the columns it must have (a dataset needs labels, images to predict on do not). Column
  names are read in lower case (``Path,Label`` from a spreadsheet); the text must be UTF-8."""
  try:
    with source.open(newline="", encoding="utf-8-sig") as f:
      table = list(csv.reader(f))
  except UnicodeDecodeError as e:
    raise DatasetError(f"{source} is not UTF-8 text (byte {e.object[e.start]:#x} at offset "
                       f"{e.start}); save it as CSV UTF-8") from None
  columns = [c.strip().lower() for c in (table[0] if table else [])]
  missing = [c for c in required if c not in columns]
  if missing:
    header = "path,label[,split][,id]" if "label" in required else "path[,label]"
    raise DatasetError(f"{source} lacks the column(s) {missing}; expected a header "
                       f"'{header}' (path relative to the CSV)")
  rows = []
  for number, values in enumerate(table[1:], start=2):
    row = {c: values[i].strip() if i < len(values) else "" for i, c in enumerate(columns)}
    if any(row.values()):
      rows.append({**row, "where": f"{source.name}:{number}"})
  if not rows:
    raise DatasetError(f"{source} lists no images; add rows under its header")
  return rows


def listed_path(folder: Path, written: str) -> Path:
  """The file a CSV row names, relative to the CSV's ``folder`` (or absolute). A path
  written on Windows (``images\\a.png``) is read with ``/`` where it does not exist as
  written (a backslash is a legal character in a POSIX file name)."""
  path = folder / written
  if "\\" in written and not path.exists():
    return folder / PureWindowsPath(written).as_posix()
  return path


def listed_files(source: Path) -> list[Path]:
  """The files a dataset CSV names (for its source key)."""
  return [listed_path(source.parent, r["path"]) for r in read_table(source)]


def _group(path: Path, class_folder: Path) -> str:
  """The first folder below the class (``<class>/<patient>/<image>``), else ""."""
  parts = path.relative_to(class_folder).parts
  return parts[0] if len(parts) > 1 else ""


def _warn_split_groups(rows) -> None:
  """Given splits that put one patient's images on both sides leak: say so, with examples."""
  seen = collections.defaultdict(set)
  for r in rows:
    if r["group"]:
      seen[r["group"]].add(r["split"])
  crossing = sorted(g for g, s in seen.items() if len(s) > 1)
  if crossing:
    logging.warning("%d group(s) (patients) have images in more than one split, e.g. %s: "
                    "their images are not independent across splits", len(crossing),
                    ", ".join(crossing[:5]))


class ByPath(LabelledFilesBuilder):
  # 1.1.0: images at any depth below a class, split folders by name, labels stripped, hidden
  # files left out; 1.2.0: a CSV's id column names its examples, patients are drawn whole;
  # 1.3.0: TIFF stored as PNG, 10-14-bit greyscale scaled to 16 bits (data/images.py),
  # DICOM's Modality and VOI LUT Sequences and VOILUTFunction applied, YBR colour DICOM and
  # suffix-less DICOM read, CSV Windows paths read with "/", exactly repeated rows read once.
  # Copies prepared by an older version may hold other examples, ids or pixels, so are not
  # reused.
  VERSION = "1.3.0"
  DESCRIPTION = "A user's images given by path: a folder with or without splits, or a CSV."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Pass the folder or CSV itself as config.data.name (or dataset=PATH in the config
arguments): PATH/<split>/<class>/<image>, PATH/<class>/<image>, or PATH.csv with columns
path,label[,split][,id]."""

  def __init__(self, *, source: str, split_fractions=(0.7, 0.1, 0.2), split_seed: int = 0,
               **kwargs):
    self.source = Path(source).expanduser()
    if not self.source.exists():
      raise DatasetError(f"dataset path {self.source} does not exist; give a folder "
                         f"<split>/<class>/<image>, <class>/<image> or a CSV path,label[,split]")
    self.root = self.source.parent if is_csv(self.source) else self.source
    fractions = tuple(float(f) for f in split_fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
      raise DatasetError(f"config.data.split_fractions={split_fractions}: expected three "
                         f"fractions train, val, test summing to 1")
    self._rows, self.assigned_splits = self._read(fractions, split_seed)
    self._groups = {r["id"]: r["group"] for r in self._rows if r["group"]}
    labels = {c for r in self._rows for c in r["labels"]}
    self._classes = tuple(sorted(labels))
    if len(self._classes) < 2:
      found = f"only the class {self._classes[0]!r}" if self._classes else "no labels"
      raise DatasetError(f"{self.source} holds {found}; a classifier needs images of at "
                         f"least two classes (a folder, or a label, per class)")
    self.MULTI_LABEL = any(len(r["labels"]) > 1 for r in self._rows)
    super().__init__(**kwargs)

  def class_names(self):
    return self._classes

  def _read(self, fractions, seed) -> tuple[list[dict], bool]:
    """Rows ``{path, id, labels, split, where}``; whether the splits were drawn here."""
    if is_csv(self.source):
      rows, seen = [], {}
      for r in read_table(self.source):
        if not r["path"]:
          raise DatasetError(f"{self.source} ({r['where']}): the path is empty; give the "
                             f"image's path (relative to the CSV) or remove the row")
        labels = tuple(sorted({label.strip() for label in r["label"].split(MULTI_LABEL_SEPARATOR)}
                              - {""}))
        split = r.get("split", "")
        if split and split not in SPLITS:
          raise DatasetError(f"{self.source} ({r['where']}): split {split!r} is not one of "
                             f"{list(SPLITS)}")
        path = listed_path(self.root, r["path"])
        written = r["path"] if path == self.root / r["path"] else path.relative_to(self.root)
        row = {"path": path, "id": r.get("id") or str(written), "labels": labels,
               "split": split, "where": r["where"], "group": r.get("group", "")}
        first = seen.setdefault(row["id"], row)
        if first is not row and all(first[k] == row[k] for k in row if k != "where"):
          # The same row twice (e.g. exports concatenated): one example. A repeated id with
          # another label or split is a conflict, refused when listed.
          logging.warning("%s repeats %s (same path, label and split): read once",
                          r["where"], first["where"])
          continue
        rows.append(row)
    else:
      rows = self._read_folder()
    if not rows:
      raise DatasetError(f"{self.source} holds no images (looked for {', '.join(SUFFIXES)} "
                         f"in <split>/<class>/ or <class>/ folders)")
    groups = {r["id"]: r["group"] for r in rows if r["group"]}
    if all(r["split"] for r in rows):
      _warn_split_groups(rows)
      self._check_given_classes(rows)
      return rows, False
    if any(r["split"] for r in rows):
      raise DatasetError(f"{self.source}: some rows have a split and some do not; give every "
                         f"row a split (train, val or test) or none")
    chosen = stratified_split([r["id"] for r in rows], ["|".join(r["labels"]) for r in rows],
                              fractions, seed, groups)
    if groups:
      logging.info("Split drawn by group (patient): %d groups hold %d of the %d images.",
                   len(set(groups.values())), len(groups), len(rows))
    for key in sorted({"|".join(r["labels"]) for r in rows} - {""}):  # "": refused later.
      drawn = {chosen[r["id"]] for r in rows if "|".join(r["labels"]) == key}
      if fractions[2] and "test" not in drawn:
        logging.warning("class %r has too few images for a test example (%s only): its test "
                        "measures will be missing", key, ", ".join(sorted(drawn)))
    return [{**r, "split": chosen[r["id"]]} for r in rows], True

  def _check_given_classes(self, rows) -> None:
    """Given splits: a class with no training image cannot be learnt (often a folder name
    spelt differently, ``Normal`` beside ``normal``), so is refused; a class without test
    images is warned about."""
    found = collections.defaultdict(set)
    for r in rows:
      found[r["split"]].update(r["labels"])
    untrained = sorted(set().union(*found.values()) - found["train"])
    if untrained:
      named = ", ".join(f"{c!r} (in {'/'.join(sorted(s for s in found if c in found[s]))})"
                        for c in untrained)
      raise DatasetError(f"{self.source}: class(es) {named} have no training images, so "
                         f"cannot be learnt; the training classes are {sorted(found['train'])}"
                         f": rename, add training images or remove them")
    if "test" in found:
      for c in sorted(found["train"] - found["test"]):
        logging.warning("class %r has no test images: its test measures will be missing", c)

  def _read_folder(self) -> list[dict]:
    top = list_class_folders(self.root)
    if not top:
      raise DatasetError(f"{self.root} has no sub-folders; expected <split>/<class>/<image> "
                         f"or <class>/<image>")
    rows = []
    if "train" in top and not set(top) <= set(SPLIT_FOLDERS):
      others = sorted(set(top) - set(SPLIT_FOLDERS))
      raise DatasetError(f"{self.root} has a train folder beside {others}: expected split "
                         f"folders {sorted(SPLIT_FOLDERS)} or class folders")
    if "train" not in top and set(top) <= set(SPLIT_FOLDERS):
      raise DatasetError(f"{self.root} has the split folder(s) {top} but no train folder: "
                         f"add train/<class>/<image> (or give the folder of the class folders)")
    if "train" not in top:  # <class>/.../<image>
      for name in top:
        found = _images(self.root / name, deep=True)
        if not found:
          logging.warning("%s holds no images: no class %r", self.root / name, name)
        rows += [{"path": p, "id": str(p.relative_to(self.root)), "labels": (name,),
                  "split": "", "where": "", "group": _group(p, self.root / name)}
                 for p in found]
      return rows
    for split in top:  # <split>/<class>/<image>
      loose = _images(self.root / split)
      if loose:
        raise DatasetError(f"{self.root / split} holds {len(loose)} image(s) outside any class "
                           f"folder (e.g. {loose[0].name}); move them into "
                           f"{split}/<class>/ or out of the dataset")
      for name in list_class_folders(self.root / split):
        rows += [{"path": p, "id": str(p.relative_to(self.root)), "labels": (name,),
                  "split": SPLIT_FOLDERS[split], "where": "",
                  "group": _group(p, self.root / split / name)}
                 for p in _images(self.root / split / name, deep=True)]
    return rows

  def _root(self, dl_manager) -> Path:
    return self.root

  def _source_name(self, root: Path) -> str:
    return str(self.source)

  def _list(self, root: Path) -> Listing:
    listing = Listing()
    index = {c: i for i, c in enumerate(self._classes)}
    for split in sorted({r["split"] for r in self._rows} | ({"train", "val", "test"}
                                                            if self.assigned_splits else set())):
      listing.split(split)
    for r in self._rows:
      if not r["labels"]:
        listing.bad_row(r["where"] or str(r["path"]), "has no label")
        continue
      if self.MULTI_LABEL:
        label = [1.0 if c in r["labels"] else 0.0 for c in self._classes]
      else:
        label = index[r["labels"][0]]
      listing.add(r["split"], Entry(r["path"], r["id"], label, where=r["where"]))
    return listing

  def group_of(self, example_id: str) -> str:
    """The example's group (its patient folder or CSV ``group``); "" when it stands alone."""
    return self._groups.get(example_id, "")

  def split_table(self) -> list[tuple[str, str, str, str, str]]:
    """``(path, label, split, id, group)`` of every example prepared: the CSV that reproduces
    this dataset wherever it is read from (absolute paths, the same ids), without the
    files left out as bad, unlabelled or listed twice."""
    skipped = set(class_folders.skipped_files(self))
    counts = collections.Counter(r["id"] for r in self._rows)
    return [(str(r["path"].resolve()), MULTI_LABEL_SEPARATOR.join(r["labels"]), r["split"],
             r["id"], r["group"]) for r in sorted(self._rows, key=lambda r: r["id"])
            if r["labels"] and counts[r["id"]] == 1
            and relative(str(r["path"]), self.root) not in skipped]

  def _check_file(self, path: Path):
    if dicom_folder.is_dicom(path):
      return dicom_folder.check_dicom(path, self._min_side)
    return super()._check_file(path)

  def _encoded(self, path: Path):
    if dicom_folder.is_dicom(path):
      return dicom_folder.dicom_to_png(path)
    return super()._encoded(path)
