"""Where raw archives and prepared TFDS data live.

Raw files for dataset X are in ``<data_dir>/X/`` with data_dir = ``config.data.manual_dir``
(``--data_dir`` of the commands), else ``$MEDJAX_DATA_DIR``, else ``~/medjax_data``. Files
looked up by a relative name (``data:`` weight locators, benchmark inputs) are searched
in :func:`data_dirs`. Prepared TFDS records go to
``config.data.tfds_dir``, else ``$MEDJAX_TFDS_DIR``, else ``~/tensorflow_datasets``: raw
archives are often on read-only shares, so the two are kept apart.
"""
import hashlib
import os
from pathlib import Path


def data_dir(manual_dir: str | None = None) -> Path:
  return Path(manual_dir or os.environ.get("MEDJAX_DATA_DIR") or "~/medjax_data").expanduser()


def data_dirs() -> list[Path]:
  """Where a file named relative to the data folder is looked for, in order: the data
  folder above, then ``../shared/data`` beside the source checkout, where a project's
  shared data sits when it is not installed for the user."""
  here = data_dir()
  shared = Path(__file__).resolve().parents[3] / "shared" / "data"
  return [here] if shared == here else [here, shared]


def find(relative: str) -> Path | None:
  """The first ``d / relative`` of :func:`data_dirs` that exists, else None."""
  return next((d / relative for d in data_dirs() if (d / relative).exists()), None)


def dataset_dir(name: str, manual_dir: str | None = None) -> Path:
  """The folder holding dataset ``name``'s raw files, as the organisers distribute them."""
  return data_dir(manual_dir) / name


def tfds_dir(tfds_dir_: str | None = None) -> Path:
  return Path(tfds_dir_ or os.environ.get("MEDJAX_TFDS_DIR") or "~/tensorflow_datasets").expanduser()


def source_key(source: Path, recipe: str, listed: list[Path] | None = None,
               skip: Path | None = None) -> str:
  """A short hash of where ``source`` is and what it holds, plus the builder ``recipe``.

  A prepared copy is reused only while its source is unchanged: renamed, added, removed,
  resized or rewritten files (relative path, size, modification time) or a different
  location give a new key, hence a fresh, validated copy. Only ``stat`` is used, never the
  image bytes, so keying 100,000 files costs a directory walk. A file source (a CSV) is
  keyed by its bytes and the files it lists (``listed``); a folder by every file below it
  except those under ``skip`` (a prepared-data folder kept inside the raw one).
  """
  source = source.expanduser().resolve()
  digest = hashlib.sha256(f"{recipe}\n{source}\n".encode())
  if source.is_file():
    digest.update(hashlib.sha256(source.read_bytes()).digest())
    files = sorted(set(listed or ()))
    base = source.parent
  else:
    skip_prefix = str(skip.expanduser().resolve()) + os.sep if skip else None
    files = []
    for folder, dirs, names in os.walk(source, followlinks=True):
      if skip_prefix and (folder + os.sep).startswith(skip_prefix):
        dirs[:] = []
        continue
      dirs.sort()
      files.extend(Path(folder) / n for n in sorted(names))
    base = source
  for path in files:
    try:
      st = path.stat()
      stamp = f"{st.st_size} {st.st_mtime_ns}"
    except OSError:
      stamp = "missing"
    digest.update(f"{os.path.relpath(path, base)}\t{stamp}\n".encode())
  return digest.hexdigest()[:16]
