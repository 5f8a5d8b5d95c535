"""Atomic file writes: a crash or kill mid-write never leaves half a file behind.

Everything a run keeps (results, manifests, statistics) is written to a temporary name
and renamed into place; a rename within one folder is atomic on POSIX filesystems.
"""
import json
from pathlib import Path


def save_json(path: Path, obj) -> None:
  path = Path(path)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(path)
