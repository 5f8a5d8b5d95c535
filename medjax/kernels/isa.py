"""What the host CPU's vector units are, read once from ``/proc/cpuinfo``.

Some of :mod:`medjax.kernels`' forms win on one ISA and lose on another (the per-row kernel
gradient beats XLA's own with AVX-512 and loses to it with AVX2 only; channel padding was
measured to pay with AVX2: docs/performance.md), so :func:`medjax.kernels.conv_algorithm`
asks here. The answer changes only which of two forms of one function runs (equal up to
float32 round-off).
"""
import functools
from pathlib import Path


def parse_flags(cpuinfo: str) -> frozenset[str]:
  """The first processor's feature flags in ``/proc/cpuinfo`` text (x86 ``flags`` or Arm
  ``Features``)."""
  for line in cpuinfo.splitlines():
    key, _, value = (part.strip() for part in line.partition(":"))
    if key in ("flags", "Features"):
      return frozenset(value.split())
  return frozenset()


@functools.cache
def flags() -> frozenset[str]:
  """This host's CPU feature flags; empty off Linux."""
  try:
    return parse_flags(Path("/proc/cpuinfo").read_text())
  except OSError:
    return frozenset()


def vector_floats(cpu_flags: frozenset[str] | None = None) -> int:
  """float32 lanes of the widest vectors in ``cpu_flags`` (default: this host's): 16 with
  AVX-512F, 8 with AVX2, else 4 (SSE, NEON, or unknown)."""
  cpu_flags = flags() if cpu_flags is None else cpu_flags
  if "avx512f" in cpu_flags:
    return 16
  return 8 if "avx2" in cpu_flags else 4
