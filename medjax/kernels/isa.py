"""What the host CPU's vector units are, read once from ``/proc/cpuinfo``.

Some of :mod:`medjax.kernels`' forms win on one ISA and lose on another (the per-row kernel
gradient beats XLA's own with AVX-512 and loses to it with AVX2 only: docs/performance.md),
so :func:`medjax.kernels.conv_algorithm` asks here. The answer changes only which of two
forms of one function runs (equal up to float32 round-off).
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


def wide_vectors() -> bool:
  """Whether the CPU has 512-bit vectors (AVX-512F)."""
  return "avx512f" in flags()
