"""The shared mechanism behind every ``<root>/<split>/<class>/<image>`` dataset.

Kermany's chest X-rays, Kvasir, ImageCLEF 2016 subfigures and users' own folders all come
as one folder per class; only the root, the split folders and the class list differ. A
builder here lists the files (skipping stray files such as ``.DS_Store``); validating every
image before anything is written and storing the encoded bytes unchanged are shared with
the list-file datasets (:mod:`medjax.data.builders.labelled_files`).
"""
from pathlib import Path

import tensorflow_datasets as tfds

from medjax.data import validate
from medjax.data.builders.labelled_files import Entry, LabelledFilesBuilder, Listing


def list_class_folders(split_dir: Path) -> list[str]:
  return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(split_dir: Path, class_names,
                suffixes: tuple[str, ...] = validate.IMAGE_SUFFIXES) -> list[tuple[Path, int]]:
  """``(path, label)`` for every image file below ``split_dir/<class>/``, sorted by path.

  Files whose suffix is not among ``suffixes`` (``.DS_Store``, ``Thumbs.db``, ``*.txt``)
  are ignored as in the public archives; a folder that is not a known class is an error.
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
      if path.is_file() and path.suffix.lower() in suffixes:
        items.append((path, label))
  return items


class ClassFoldersBuilder(LabelledFilesBuilder):
  """Base: subclasses set ``SPLIT_FOLDERS`` ({tfds split: folder}) and ``CLASS_NAMES``.

  Checking, skipping (``on_bad_file``) and writing are :class:`LabelledFilesBuilder`'s;
  the example id is the path relative to the archive root, unique by construction.
  """
  SPLIT_FOLDERS: dict[str, str] = {}
  IMAGE_SUFFIXES: tuple[str, ...] = validate.IMAGE_SUFFIXES

  def _list(self, root: Path) -> Listing:
    listing = Listing()
    for split, folder in self.SPLIT_FOLDERS.items():
      self._list_folder(listing, root, split, folder)
    return listing

  def _list_folder(self, listing: Listing, root: Path, split: str, folder: str) -> None:
    listing.split(split)
    for path, label in list_images(root / folder, self.class_names(), self.IMAGE_SUFFIXES):
      listing.add(split, Entry(path, str(path.relative_to(root)), label))


def skipped_files(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Paths skipped as bad when ``builder`` was prepared (empty when none or not tracked)."""
  return list(builder.info.metadata.get("skipped", [])) if builder.info.metadata else []
