"""Timing helpers shared by every benchmark case.

The machine these numbers come from is shared, so a medjax time and its peer's time taken
minutes apart can see different loads. :func:`compare` therefore warms both up (JIT
compilation, allocator and thread-pool start-up) and then times them *alternately*,
medjax, peer, medjax, peer, ..., reporting the median of each; a load spike then hits both
sides roughly alike. Every record carries the load average around it and the thread
counts, so a reader can judge a number without having been there.
"""
import dataclasses
import os
import statistics
import time
from typing import Callable

import jax
import numpy as np

# The fields every record has; cases add quality fields (accuracy, inertia, objective).
RECORD_FIELDS = ("name", "medjax_seconds", "peer", "peer_seconds", "ratio")
# Fields that describe the measurement rather than the quality of a result.
_MEASUREMENT_FIELDS = (*RECORD_FIELDS, "repeats", "medjax_all_seconds", "peer_all_seconds",
                       "medjax_cpu_seconds", "peer_cpu_seconds", "load_avg_before",
                       "load_avg_after", "threads", "quick")


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark: ``run()`` returns its record, or one record per peer (see :func:`compare`)."""
  name: str
  run: Callable[[], dict | list[dict]]


class SkipCase(Exception):
  """A case whose inputs are not on this machine; the runner reports it and goes on."""


def threads() -> int:
  """Gives PyTorch's and faiss's thread pools every core, as XLA:CPU's has by default."""
  import faiss
  import torch
  n = os.cpu_count() or 1
  torch.set_num_threads(n)
  faiss.omp_set_num_threads(n)
  return n


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
  """``(wall seconds, CPU seconds of this process, result)`` of one call.

  CPU seconds add up every thread's work, so on a loaded machine they show how much
  computing a call needed even when the wall time mostly shows the wait for a core.
  """
  start, cpu = time.perf_counter(), time.process_time()
  result = jax.block_until_ready(fn())  # JAX dispatches asynchronously.
  return time.perf_counter() - start, time.process_time() - cpu, result


def _record(name: str, peer: str, medjax_times: list, peer_times: list) -> dict:
  """The timing fields of a record from ``(wall, cpu, ...)`` tuples of each side."""
  medjax_s = statistics.median(t[0] for t in medjax_times)
  peer_s = statistics.median(t[0] for t in peer_times)
  return {"name": name, "medjax_seconds": medjax_s, "peer": peer, "peer_seconds": peer_s,
          "ratio": peer_s / medjax_s, "repeats": len(medjax_times),
          "medjax_all_seconds": [t[0] for t in medjax_times],
          "peer_all_seconds": [t[0] for t in peer_times],
          "medjax_cpu_seconds": statistics.median(t[1] for t in medjax_times),
          "peer_cpu_seconds": statistics.median(t[1] for t in peer_times)}


def compare(name: str, medjax_fn: Callable[[], object], peer: str,
            peer_fn: Callable[[], object], *, repeats: int, warmup: int = 1,
            items: int | None = None, **quality) -> dict:
  """Times ``medjax_fn`` and ``peer_fn`` alternately; returns the benchmark record.

  Both are called ``warmup`` times first (untimed: compilation, thread-pool start-up),
  then ``repeats`` times each in alternation. ``items`` (images) processed per call adds
  ``medjax_images_per_s``/``peer_images_per_s``. ``ratio`` is peer time over medjax time:
  above 1 medjax is faster. ``quality`` fields are copied into the record as given.
  """
  load_before = list(os.getloadavg())
  for _ in range(warmup):
    _timed(medjax_fn)
    _timed(peer_fn)
  medjax_times, peer_times = [], []
  for _ in range(repeats):
    medjax_times.append(_timed(medjax_fn))
    peer_times.append(_timed(peer_fn))
  record = _record(name, peer, medjax_times, peer_times)
  if items is not None:
    record["medjax_images_per_s"] = items / record["medjax_seconds"]
    record["peer_images_per_s"] = items / record["peer_seconds"]
  return {**record, **quality, "load_avg_before": load_before,
          "load_avg_after": list(os.getloadavg())}


def alternate_fits(name: str, medjax_fit: Callable[[], object], peers: dict[str, Callable],
                   *, repeats: int, quality: Callable[[str, object], dict]) -> list[dict]:
  """Times whole fits (SVM, k-means) of medjax and each peer in turn; one record per peer.

  medjax is fitted once untimed first, as its first call compiles. ``quality(who,
  result)`` turns a fit's result into fields such as accuracy or inertia, reported as
  ``medjax_<field>`` and ``peer_<field>``; the last fit of each side is scored.
  """
  load_before = list(os.getloadavg())
  _timed(medjax_fit)
  times = {"medjax": [], **{p: [] for p in peers}}
  for _ in range(repeats):
    for who, fn in (("medjax", medjax_fit), *peers.items()):
      times[who].append(_timed(fn))
  scores = {who: quality(who, runs[-1][2]) for who, runs in times.items()}
  return [{**_record(name, peer, times["medjax"], times[peer]),
           **{f"medjax_{k}": v for k, v in scores["medjax"].items()},
           **{f"peer_{k}": v for k, v in scores[peer].items()},
           "load_avg_before": load_before, "load_avg_after": list(os.getloadavg())}
          for peer in peers]


def markdown_table(records: list[dict]) -> str:
  """The records as the table in docs/performance.md."""
  lines = ["| case | medjax s | peer | peer s | ratio (peer/medjax) | quality | load avg |",
           "|---|---:|---|---:|---:|---|---:|"]
  for r in records:
    quality = ", ".join(f"{k}={_fmt(v)}" for k, v in r.items() if k not in _MEASUREMENT_FIELDS)
    lines.append(f"| {r['name']} | {r['medjax_seconds']:.3f} | {r['peer']} | "
                 f"{r['peer_seconds']:.3f} | {r['ratio']:.2f} | {quality} | "
                 f"{r['load_avg_before'][0]:.1f} |")
  return "\n".join(lines)


def _fmt(v) -> str:
  return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)
