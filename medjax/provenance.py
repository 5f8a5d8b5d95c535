"""What produced a number: interpreter, CPU, accelerator, installed versions, the lock file.

Recorded in every ``results.json`` and benchmark record, so a figure in the docs can be
rerun with what made it, and figures from different machines are not compared blindly.
"""
import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import jax

from medjax.kernels import isa, onednn

# The packages whose versions decide a result; recorded so a number can be rerun as made.
_RECORDED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "clu", "numpy",
                      "scipy", "scikit-learn", "scikit-image", "tensorflow-cpu", "tensorflow",
                      "tensorflow-datasets", "pillow", "torch", "faiss-cpu", "onednn-cpu-gomp",
                      "medjax")
LOCK_FILE = Path(__file__).resolve().parents[1] / "requirements.lock"


# CPU features that decide which kernels are fast (vector width, bf16 and AMX units).
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16")


def cpu() -> dict:
  """The CPU's model name, family (vendor, ``cpu family``/``model``: a VM's model name may
  be as bare as "AMD EPYC", and the family tells Zen 4 from Zen 5), its ISA features of
  interest and the cores this process may use."""
  first, text = {}, ""
  try:
    text = Path("/proc/cpuinfo").read_text()
  except OSError:  # Not Linux: the model from platform, no flags.
    pass
  for line in text.splitlines():
    key, _, value = (part.strip() for part in line.partition(":"))
    if key in ("model name", "vendor_id", "cpu family", "model") and key not in first:
      first[key] = value
  flags = isa.parse_flags(text)  # x86 and Arm spellings.
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  family = ("/".join(first[k] for k in ("vendor_id", "cpu family", "model") if k in first)
            or None)
  return {"model": first.get("model name") or platform.processor() or platform.machine(),
          "family": family, "isa": [f for f in _CPU_FLAGS if f in flags], "cores": cores}


def source(root: Path = LOCK_FILE.parent) -> dict | None:
  """The git commit medjax runs from and whether tracked files differ from it; None outside
  a git checkout (an installed wheel) or without git. Package versions alone do not tell
  two checkouts of medjax apart."""
  def git(*args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(root).resolve():
      return None  # medjax installed inside some other repository.
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
  except (OSError, subprocess.SubprocessError):
    return None


def source_at_start(root: Path = LOCK_FILE.parent) -> dict | None:
  """``source(root)`` as of this process's first call: the code a process runs is what it
  imported when it started, so a commit made while a long run trains is not credited with
  that run's results. Runs call it when they open their workdir."""
  return _source_once(Path(root).resolve())


@functools.cache
def _source_once(root: Path) -> dict | None:
  return source(root)


def environment() -> dict:
  """Python, platform, CPU, devices, the lock file's hash, the versions that matter and the
  source commit."""
  packages = {}
  for name in _RECORDED_PACKAGES:
    try:
      packages[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  lock = (hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest() if LOCK_FILE.is_file() else None)
  from medjax import host_memory
  return {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu(),
          "backend": jax.default_backend(), "devices": jax.device_count(),
          "processes": jax.process_count(), "lock_sha256": lock, "packages": packages,
          "host_memory": host_memory.policy(), "onednn_convolutions": onednn.state(),
          "source": source_at_start()}


