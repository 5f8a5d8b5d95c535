"""Keep freed host memory for reuse, so XLA:CPU's per-step temporaries stop page-faulting.

XLA:CPU allocates an executable's temporaries afresh on every run (gigabytes for the LeNet
one-vs-all train step) with ``posix_memalign`` on one of its worker threads, and frees them
when the run ends. glibc serves a block that large with a new ``mmap`` (a worker thread's
arena cannot hold it, and mmap is then its fallback whatever ``M_MMAP_MAX`` says) and
returns it with ``munmap``, so every step faults in and zeroes all those pages anew.
PyTorch's CPU allocator goes through the same calls and pays the same way.

:func:`retain_freed_blocks` has glibc serve every thread from the main arena
(``M_ARENA_MAX`` 1), take large blocks from the heap rather than mmap (``M_MMAP_MAX`` 0)
and never hand the heap's top back to the kernel (``M_TRIM_THRESHOLD`` -1). A freed
block then serves the next step, which faults nothing. The price is the one tcmalloc and
jemalloc also charge: the process keeps its peak heap until it exits. Small allocations
still go through glibc's per-thread caches, so one arena adds little lock contention.

It is opt-in (``python -m medjax.main --retain_host_memory``, ``python -m benchmarks.run
--allocator retain``) because one heap that never shrinks can fragment: freed blocks of
different sizes, pinned apart by live ones, are not merged, so a process that alternates
programs with large temporaries of different sizes can grow far past its peak need. A
training run compiles a few programs and reuses their buffer sizes; a process that keeps
compiling new large ones should leave glibc alone.

It must run before the first JAX computation: a thread keeps the arena it first allocated
from, and XLA's worker threads start with the CPU client. ``medjax.main`` and
``benchmarks.run`` call it first thing when asked; a notebook or script can do the same.
"""
import ctypes
import ctypes.util
import platform

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
_retaining = False


def retain_freed_blocks() -> bool:
  """Sets :data:`SETTINGS` with glibc's ``mallopt``; True if every setting took. Calling it
  again sets the same values.

  False, changing nothing, where the C library is not glibc (macOS, musl): their
  allocators have other knobs, and medjax runs there as before.
  """
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  global _retaining
  _retaining = all([libc.mallopt(param, value) == 1 for param, value in SETTINGS])
  return _retaining


def retaining() -> bool:
  """Whether :func:`retain_freed_blocks` has set the policy in this process."""
  return _retaining
