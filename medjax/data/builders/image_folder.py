"""Users' own data: ``<root>/<split>/<class>/<image>``, classes discovered from the folders.

The class list is the sorted union of class folders over all split folders, so a class
missing from one split keeps the same label index everywhere.
"""
from pathlib import Path

from medjax.data.builders.class_folders import ClassFoldersBuilder, list_class_folders


class ImageFolder(ClassFoldersBuilder):
  VERSION = "1.1.0"  # 1.1.0: TIFF and 10-14-bit greyscale stored as PNG (data/images.py).
  DESCRIPTION = "A generic image folder: <root>/<split>/<class>/<image>."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Arrange your images as <root>/<split>/<class>/<image> (split folders such as train/, val/,
test/; one folder per class) and pass the folder itself as config.data.name (dataset=<root>),
or set config.data.manual_dir so that <root> is <manual_dir>/image_folder."""

  def __init__(self, *, root: str, **kwargs):
    self._folder_root = Path(root)
    if not self._folder_root.is_dir():
      raise FileNotFoundError(f"image folder root {self._folder_root} does not exist; "
                              f"expected <root>/<split>/<class>/<image>")
    splits = list_class_folders(self._folder_root)
    if not splits:
      raise ValueError(f"{self._folder_root} has no split folders (expected e.g. train/, test/)")
    self.SPLIT_FOLDERS = {s: s for s in splits}
    self._classes = tuple(sorted({c for s in splits
                                  for c in list_class_folders(self._folder_root / s)}))
    super().__init__(**kwargs)

  def class_names(self):
    return self._classes
