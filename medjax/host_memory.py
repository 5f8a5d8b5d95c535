"""Host memory policies, so XLA:CPU's per-step temporaries stop page-faulting.

Two remedies for the same cost. :func:`use_huge_pages` (the default of ``medjax.main``)
backs glibc's large blocks with 2 MiB transparent huge pages, so the fresh mapping of each
step faults once per 2 MiB instead of once per 4 KiB; :func:`retain_freed_blocks`
(opt-in) keeps freed blocks for the next step instead.

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
import os
import platform
import sys
from pathlib import Path

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
_retaining = False

# glibc >= 2.35: malloc madvises its heap and its mmap'd blocks for transparent huge pages.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _glibc_version() -> tuple[int, ...]:
  if platform.system() != "Linux":
    return ()
  name, version = platform.libc_ver()
  if name != "glibc" or not version:
    return ()
  return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def huge_pages_possible() -> bool:
  """Whether glibc takes the tunable (2.35 on) and the kernel grants huge pages to regions
  that ask (transparent_hugepage "madvise" or "always"; "never" or no file: no)."""
  if _glibc_version() < (2, 35):
    return False
  try:
    setting = THP_SETTING.read_text()
  except OSError:
    return False
  return "[madvise]" in setting or "[always]" in setting


def huge_pages_on() -> bool:
  """Whether this process started with :data:`HUGE_PAGES_TUNABLE` where it can act."""
  tunables = os.environ.get("GLIBC_TUNABLES", "").split(":")
  return HUGE_PAGES_TUNABLE in tunables and huge_pages_possible()


def policy() -> str:
  """This process's host memory policy, as records name it: "retain", "huge_pages" or
  "default"."""
  return "retain" if retaining() else "huge_pages" if huge_pages_on() else "default"


def use_huge_pages() -> None:
  """Re-executes this command with :data:`HUGE_PAGES_TUNABLE` added to ``GLIBC_TUNABLES``
  (glibc reads tunables only at start-up); returns at once where it is set already or
  cannot act. The process keeps its PID, arguments and environment otherwise. Results do
  not change, only where pages come from (docs/performance.md has what it saves).
  """
  if huge_pages_on() or not huge_pages_possible():
    return
  env = dict(os.environ)
  env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), HUGE_PAGES_TUNABLE]))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


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
