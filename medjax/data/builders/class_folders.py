"""The shared mechanism behind every ``<root>/<split>/<class>/<image>`` dataset.

Kermany's chest X-rays, Kvasir, ImageCLEF 2016 subfigures and users' own folders all come
as one folder per class; only the root, the split folders and the class list differ. A
builder here lists the files (skipping stray files such as ``.DS_Store``), validates every
image before anything is written (see :mod:`medjax.data.validate`), and stores the encoded
bytes unchanged so that decoding, bit depth and colour handling happen in one place
(:mod:`medjax.data.ops`).
"""
import json
from pathlib import Path

import tensorflow_datasets as tfds

from medjax.data import validate


def list_class_folders(split_dir: Path) -> list[str]:
  return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(split_dir: Path, class_names) -> list[tuple[Path, int]]:
  """``(path, label)`` for every image file below ``split_dir/<class>/``, sorted by path.

  Files whose suffix is not an image type (``.DS_Store``, ``Thumbs.db``, ``*.txt``) are
  ignored as in the public archives; a folder that is not a known class is an error.
  """
  if not split_dir.is_dir():
    raise FileNotFoundError(f"expected the split folder {split_dir} (one sub-folder per class)")
  found = list_class_folders(split_dir)
  unknown = sorted(set(found) - set(class_names))
  if unknown:
    raise ValueError(f"{split_dir} has class folder(s) {unknown} not among the dataset's classes "
                     f"{list(class_names)}")
  items = []
  for label, name in enumerate(class_names):
    class_dir = split_dir / name
    if not class_dir.is_dir():
      continue
    for path in sorted(class_dir.iterdir()):
      if path.is_file() and path.suffix.lower() in validate.IMAGE_SUFFIXES:
        items.append((path, label))
  return items


class ClassFoldersBuilder(tfds.core.GeneratorBasedBuilder):
  """Base: subclasses set ``SPLIT_FOLDERS`` ({tfds split: folder}) and ``CLASS_NAMES``.

  Keyword arguments beyond TFDS's: ``on_bad_file`` ('fail' or 'skip') and ``min_side``.
  The paths skipped at preparation are stored in ``info.metadata['skipped']``.
  """
  SPLIT_FOLDERS: dict[str, str] = {}
  CLASS_NAMES: tuple[str, ...] = ()
  DESCRIPTION = ""

  def __init__(self, *, on_bad_file: str = "fail", min_side: int = validate.MIN_SIDE, **kwargs):
    self._on_bad_file = on_bad_file
    self._min_side = min_side
    super().__init__(**kwargs)

  def class_names(self) -> tuple[str, ...]:
    return self.CLASS_NAMES

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, None)),
            "label": tfds.features.ClassLabel(names=list(self.class_names())),
            "id": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(),
    )

  def _root(self, dl_manager) -> Path:
    root = Path(dl_manager.manual_dir)
    if not root.is_dir():
      raise FileNotFoundError(
          f"{type(self).__name__}: the raw archive folder {root} does not exist.\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return root

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    items = {split: list_images(root / folder, self.class_names())
             for split, folder in self.SPLIT_FOLDERS.items()}
    report = validate.scan_images((p for split_items in items.values() for p, _ in split_items),
                                  self._min_side)
    skipped = report.raise_or_skip(self._on_bad_file, f"{root}")
    self.info.metadata["skipped"] = sorted(str(Path(p).relative_to(root)) for p in skipped)
    self.info.metadata["image_kinds"] = validate.mode_histogram(report.modes)
    return {split: self._generate_examples(root, [(p, y) for p, y in split_items
                                                   if str(p) not in skipped])
            for split, split_items in items.items()}

  def _generate_examples(self, root: Path, items):
    for path, label in items:
      key = str(path.relative_to(root))
      yield key, {"image": path, "label": label, "id": key}


def skipped_files(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Paths skipped as bad when ``builder`` was prepared (empty when none or not tracked)."""
  return list(builder.info.metadata.get("skipped", [])) if builder.info.metadata else []


def metadata_json(builder: tfds.core.DatasetBuilder) -> str:
  return json.dumps(dict(builder.info.metadata or {}), sort_keys=True)
