"""Atomic file writes: a crash or kill mid-write never leaves half a file behind.

Everything a run keeps (results, manifests, statistics, feature chunks, k-means state) is
written to a temporary name
and renamed into place; a rename within one folder is atomic on POSIX filesystems.
"""
import json
from pathlib import Path

import numpy as np


def save_json(path: Path, obj) -> None:
  path = Path(path)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(path)


def save_npz(path: Path, **arrays) -> None:
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("wb") as f:
    np.savez(f, **arrays)
  tmp.replace(path)


def save_text(path: Path, text: str) -> None:
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


def save_bytes(path: Path, data: bytes) -> None:
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(data)
  tmp.replace(path)
