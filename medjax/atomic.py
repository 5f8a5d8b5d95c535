"""Atomic file writes: a crash or kill mid-write never leaves half a file behind.

Everything a run keeps (results, manifests, statistics, feature chunks, k-means state,
plots, exported class lists) is written to a temporary name in the same folder and renamed
into place; a rename within one folder is atomic on POSIX filesystems. Every writer goes
through :func:`_replace`, so the temporary names and the rename are in one place.
"""
import contextlib
import json
from pathlib import Path
from typing import IO, Iterator

import numpy as np


@contextlib.contextmanager
def _replace(path: Path, suffix: str = "") -> Iterator[Path]:
  """Yields a temporary path beside ``path``, renamed onto ``path`` once the block ends
  without error (``suffix``: what the writer needs the name to end with, e.g. ``.png``)."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp" + suffix)
  try:
    yield tmp
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  tmp.replace(path)


@contextlib.contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
  """A binary file to write ``path`` through; it appears only once closed whole."""
  with _replace(path) as tmp, tmp.open("wb") as f:
    yield f


def save_text(path: Path, text: str) -> None:
  with _replace(path) as tmp:
    tmp.write_text(text)


def save_json(path: Path, obj) -> None:
  save_text(path, json.dumps(obj, indent=2, sort_keys=True))


def save_bytes(path: Path, data: bytes) -> None:
  with _replace(path) as tmp:
    tmp.write_bytes(data)


def save_npz(path: Path, **arrays) -> None:
  with open_binary(path) as f:
    np.savez(f, **arrays)


def save_npy(path: Path, array) -> None:
  with open_binary(path) as f:
    np.save(f, np.asarray(array), allow_pickle=False)


def save_figure(fig, path: Path) -> None:
  """A matplotlib figure, in the format ``path``'s suffix names."""
  with _replace(path, Path(path).suffix) as tmp:
    fig.savefig(tmp)
