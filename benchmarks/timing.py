"""Timing helpers shared by every benchmark case.

The machine these numbers come from is shared, so a medjax time and its peer's time taken
minutes apart can see different loads. :func:`compare` therefore warms both up (JIT
compilation, allocator and thread-pool start-up) and then times them *alternately*,
medjax, peer, medjax, peer, ..., reporting the median of each; a load spike then hits both
sides roughly alike. Every record carries the load average around it and the thread
counts, so a reader can judge a number without having been there.
"""
import dataclasses
import functools
import logging
import os
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# The fields every record has; cases add quality fields (accuracy, inertia, objective).
RECORD_FIELDS = ("name", "medjax_seconds", "peer", "peer_seconds", "ratio")
# Fields that describe the measurement rather than the quality of a result.
_MEASUREMENT_FIELDS = (*RECORD_FIELDS, "repeats", "medjax_all_seconds", "peer_all_seconds",
                       "medjax_cpu_seconds", "peer_cpu_seconds", "load_avg_before",
                       "load_avg_after", "threads", "quick", "allocator", "device", "jax", "torch",
                       "peak_tflop_per_s")


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark: ``run()`` returns its record, or one record per peer (see :func:`compare`)."""
  name: str
  run: Callable[[], dict | list[dict]]


class SkipCase(Exception):
  """A case whose inputs are not on this machine; the runner reports it and goes on."""


def configure_peers() -> int:
  """Gives PyTorch's and faiss's thread pools every core, as XLA:CPU's has by default; returns
  the thread count.

  On a GPU the PyTorch peer may also use TF32 for float32 matmuls, as XLA's default
  precision does there (PyTorch already allows it in cuDNN convolutions by default).
  """
  import faiss
  import torch
  n = os.cpu_count() or 1
  torch.set_num_threads(n)
  faiss.omp_set_num_threads(n)
  torch.backends.cuda.matmul.allow_tf32 = True
  return n


@functools.cache
def peer_device() -> str:
  """Where the PyTorch peers run: on the GPU when medjax runs on one, else on the CPU."""
  import torch
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def autocast(compute_dtype: str):
  """The peer's counterpart of ``config.compute_dtype``: PyTorch's automatic mixed precision
  (``torch.autocast``) in bfloat16, or nothing for float32."""
  import contextlib
  import torch
  if compute_dtype == "float32":
    return contextlib.nullcontext()
  return torch.autocast(peer_device(), dtype=getattr(torch, compute_dtype))


# CPU features with bfloat16 arithmetic (x86 AVX512-BF16 / AMX, ARM BF16); medjax.provenance
# lists the ISA of the CPU a record was made on.
BF16_UNITS = ("avx512_bf16", "amx_bf16", "bf16")


def needs_bf16_units(run: Callable[[], dict | list[dict]]) -> Callable[[], dict | list[dict]]:
  """``run`` for a bfloat16 case, skipped on a CPU without bfloat16 arithmetic: there
  medjax's bfloat16 products run in float32 and PyTorch's autocast emulates bfloat16, so
  the case would take much of the run's time to show only that bfloat16 does not pay
  (docs/performance.md, "bfloat16")."""
  def checked():
    from medjax import provenance
    cpu = provenance.cpu()
    if jax.default_backend() == "cpu" and not set(BF16_UNITS) & set(cpu["isa"]):
      raise SkipCase(f"this CPU ({cpu['family']}, {'/'.join(cpu['isa'])}) has no bfloat16 "
                     f"arithmetic ({', '.join(BF16_UNITS)})")
    return run()
  return checked


def suffix(compute_dtype: str) -> str:
  """What a case's name adds for its compute dtype: nothing for float32, ``_bf16`` else."""
  return "" if compute_dtype == "float32" else "_bf16"


def peer_name() -> str:
  return "pytorch" if peer_device() == "cpu" else f"pytorch_{peer_device()}"


def accelerator_flops(jitted, *args) -> float | None:
  """The floating-point operations in one call of ``jitted`` on ``args`` on an accelerator,
  counted on the traced program by ``jax.experimental.roofline`` (convolutions and matmuls
  as written, before XLA turns them into library calls: the compiled program's
  ``cost_analysis`` counted 0.1 % of VGG19's FLOPs on a GPU). None on CPU, where the FFT
  and per-tap forms of ``medjax.kernels`` make the count differ from the model's.
  Tracing runs (and donates) nothing."""
  if jax.default_backend() == "cpu":
    return None
  from jax.experimental import roofline
  # It warns once per op it has no rule for (resharding), through absl or jax's logger.
  loggers = [logging.getLogger(name) for name in ("absl", "jax")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.ERROR)
  try:
    return float(roofline.roofline(jitted)(*args)[1].unfused_flops)
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


@functools.cache
def matmul_peak(n: int = 8192) -> float:
  """FLOP/s of an ``n``-cubed float32 matmul at JAX's default precision on the default
  device, best of five: the measured ceiling that ``fraction_of_peak`` divides by (a
  datasheet rate assumes a precision and clock that this device may not run at)."""
  a, b = jax.random.normal(jax.random.PRNGKey(0), (2, n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  return 2 * n ** 3 / min(_timed(lambda: dot(a, b))[0] for _ in range(5))


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
  """``(wall seconds, CPU seconds of this process, result)`` of one call.

  CPU seconds add up every thread's work, so on a loaded machine they show how much
  computing a call needed even when the wall time mostly shows the wait for a core.
  """
  start, cpu = time.perf_counter(), time.process_time()
  result = jax.block_until_ready(fn())  # JAX dispatches asynchronously,
  torch = sys.modules.get("torch")
  if torch is not None and torch.cuda.is_initialized():
    torch.cuda.synchronize()  # and so does PyTorch on a GPU.
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
            items: int | None = None, flops: float | None = None, **quality) -> dict:
  """Times ``medjax_fn`` and ``peer_fn`` alternately; returns the benchmark record.

  Both are called ``warmup`` times first (untimed: compilation, thread-pool start-up),
  then ``repeats`` times each in alternation. ``items`` (images) processed per call adds
  ``medjax_images_per_s``/``peer_images_per_s``; ``flops`` per medjax call (see
  :func:`accelerator_flops`) adds its rate and ``fraction_of_peak`` of :func:`matmul_peak`.
  ``ratio`` is peer time over medjax time: above 1 medjax is faster. ``quality`` fields are
  copied into the record as given.
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
  if flops is not None:
    record["medjax_tflop_per_s"] = flops / record["medjax_seconds"] / 1e12
    record["peak_tflop_per_s"] = matmul_peak() / 1e12
    record["fraction_of_peak"] = record["medjax_tflop_per_s"] / record["peak_tflop_per_s"]
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
