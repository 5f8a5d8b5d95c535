"""Where raw archives and prepared TFDS data live.

Raw files for dataset X are in ``<data_dir>/X/`` with data_dir = ``config.data.manual_dir``,
else ``$MEDJAX_DATA_DIR``, else ``~/medjax_data``. Prepared TFDS records go to
``config.data.tfds_dir``, else ``$MEDJAX_TFDS_DIR``, else ``~/tensorflow_datasets``: raw
archives are often on read-only shares, so the two are kept apart.
"""
import os
from pathlib import Path


def data_dir(manual_dir: str | None = None) -> Path:
  return Path(manual_dir or os.environ.get("MEDJAX_DATA_DIR") or "~/medjax_data").expanduser()


def dataset_dir(name: str, manual_dir: str | None = None) -> Path:
  """The folder holding dataset ``name``'s raw files, as the organisers distribute them."""
  return data_dir(manual_dir) / name


def tfds_dir(tfds_dir_: str | None = None) -> Path:
  return Path(tfds_dir_ or os.environ.get("MEDJAX_TFDS_DIR") or "~/tensorflow_datasets").expanduser()
