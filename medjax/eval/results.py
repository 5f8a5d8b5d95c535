"""What a workdir holds at the end: ``results.json``, its reuse, and several seeds combined.

A workdir whose ``results.json`` holds the same resolved config is a finished run and is
returned as is (never redone); one with a different config is refused, naming the keys.

Medical results vary a lot with the seed, so a claim should come with its spread: every
scalar metric of the per-seed ``results.json`` files is reported as ``<key>/mean`` and
``<key>/std`` (population std over seeds), with the seeds listed.

Every ``results.json`` also records its ``environment`` (versions, lock file hash), so a
number in the docs says what produced it.
"""
import hashlib
import importlib.metadata
import json
import logging
import platform
import sys
from pathlib import Path

import jax
import numpy as np

from medjax.atomic import save_json


def open_workdir(workdir: Path, config) -> tuple[dict, dict | None]:
  """Creates ``workdir``; returns ``(resolved config, stored results or None)``."""
  workdir.mkdir(parents=True, exist_ok=True)
  resolved = json.loads(config.to_json_best_effort())
  path = workdir / "results.json"
  if not path.exists():
    return resolved, None
  results = json.loads(path.read_text())
  if results.get("config") != resolved:
    old = results.get("config", {})
    keys = sorted(k for k in set(old) | set(resolved) if old.get(k) != resolved.get(k))
    raise ValueError(f"{path} holds a finished run with a different config (differs in "
                     f"{keys}); use a new --workdir or remove that file")
  logging.info("%s already holds the finished run; not redoing it.", workdir)
  return resolved, results


# The packages whose versions decide a result; recorded so a number can be rerun as made.
_RECORDED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "clu", "numpy",
                      "scipy", "scikit-learn", "scikit-image", "tensorflow-cpu", "tensorflow",
                      "tensorflow-datasets", "pillow", "torch", "faiss-cpu", "medjax")
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"


def environment() -> dict:
  """Python, platform, devices, the lock file's hash and the installed versions that matter."""
  packages = {}
  for name in _RECORDED_PACKAGES:
    try:
      packages[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  lock = (hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest() if LOCK_FILE.is_file() else None)
  return {"python": sys.version.split()[0], "platform": platform.platform(),
          "backend": jax.default_backend(), "devices": jax.device_count(),
          "processes": jax.process_count(), "lock_sha256": lock, "packages": packages}


def finish(workdir: Path, results: dict, resolved_config: dict) -> dict:
  """Adds the resolved config and the environment; process 0 writes ``results.json``."""
  results["config"] = resolved_config
  results["environment"] = environment()
  if jax.process_index() == 0:
    save_json(Path(workdir) / "results.json", results)
  return results


def over_seeds(per_seed: list[dict], config, workdir: Path) -> dict:
  seeds = [r["config"]["seed"] for r in per_seed]
  keys = [k for k, v in per_seed[0].items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)]
  out = {"seeds": seeds}
  for key in keys:
    values = np.array([r[key] for r in per_seed], np.float64)
    out[f"{key}/mean"] = float(values.mean())
    out[f"{key}/std"] = float(values.std())
  workdir.mkdir(parents=True, exist_ok=True)
  return finish(workdir, out, json.loads(config.to_json_best_effort()))
