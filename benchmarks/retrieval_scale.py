"""The retrieval index at scale: build time, memory, query latency and approximate recall.

  python -m benchmarks.retrieval_scale --out=docs/benchmarks/retrieval_scale_<date>.json
      [--sizes=1000000,100000] [--queries=200]

Two data sets, both CLUSTERED rather than uniform noise (uniform noise in 512 dimensions
has no neighbourhood structure, so no index could find neighbours faster than a scan):

* ``gaussian``: a mixture of 1,000 isotropic Gaussians in 512-d, unit-norm centres, spread
  0.6 / sqrt(d) per dimension; queries are fresh draws from the same mixture;
* ``real_shaped``: non-negative, sparse vectors shaped like pooled post-ReLU CNN features
  (what the runs index): 300 gamma-distributed modes plus noise, clipped at zero.

Per data set: the index is built through ``medjax.retrieval.index.create`` (exact part:
the ``.npy`` files; approximate part: faiss as ``search.plan`` chooses, probes tuned to
recall@10 >= 0.95), then one query at a time is timed for exact search (the jitted JAX
matmul + top-k) and approximate search; recall@10 of approximate against exact answers.
The record's ``medjax_seconds`` is the approximate p50, its peer the exact search.
"""
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from absl import flags

from medjax import cli

import numpy as np  # noqa: I001 -- after cli, as in every command.

from benchmarks import timing
from medjax.retrieval import index as index_lib
from medjax.retrieval import search

DIMS = 512


def gaussian(n: int, d: int = DIMS, modes: int = 1000, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  centres = search.l2_normalize(rng.normal(size=(modes, d)))
  out = np.empty((n, d), np.float32)
  for start in range(0, n, 1 << 16):  # In blocks: no float64 copy of the whole set.
    m = min(1 << 16, n - start)
    out[start:start + m] = centres[rng.integers(0, modes, m)] + rng.normal(
        0, 0.6 / np.sqrt(d), (m, d)).astype(np.float32)
  return out


def real_shaped(n: int, d: int = DIMS, modes: int = 300, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  centres = rng.gamma(0.5, 1.0, (modes, d)).astype(np.float32)
  out = np.empty((n, d), np.float32)
  for start in range(0, n, 1 << 16):
    m = min(1 << 16, n - start)
    out[start:start + m] = np.maximum(centres[rng.integers(0, modes, m)] + rng.normal(
        0, 0.5, (m, d)).astype(np.float32), 0)
  return out


DATA = {"gaussian": gaussian, "real_shaped": real_shaped}


def _latencies(fn, queries: np.ndarray) -> tuple[np.ndarray, list]:
  fn(queries[:1])  # Compilation and thread-pool start-up.
  times, answers = [], []
  for q in queries:
    t0 = time.perf_counter()
    rows, _ = fn(q[None])
    times.append(time.perf_counter() - t0)
    answers.append(rows[0])
  return np.asarray(times), answers


def _rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def scale_case(n: int, data: str = "gaussian", d: int = DIMS, queries: int = 200,
               approximate_above: int = index_lib.APPROXIMATE_ABOVE) -> dict:
  make = DATA[data]
  x = make(n + queries, d)
  q, x = x[n:], x[:n]
  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory(prefix="retrieval_scale_") as folder:
    t0 = time.perf_counter()
    index = index_lib.create(folder, x, np.zeros(n, np.int8), np.arange(n).astype(str),
                             approximate_above=n + 1)
    exact_build = time.perf_counter() - t0
    del x
    t0 = time.perf_counter()
    index.device_embeddings.block_until_ready()
    exact_load = time.perf_counter() - t0
    exact_times, truth = _latencies(lambda v: index.search(v, 10, exact=True), q)
    approximate = n >= approximate_above
    record = {"name": f"retrieval_scale/{n}x{d}_{data}", "n": n, "dims": d, "data": data,
              "queries": queries, "exact_build_seconds": exact_build,
              "exact_device_load_seconds": exact_load,
              "exact_p50_ms": 1e3 * float(np.median(exact_times)),
              "exact_p99_ms": 1e3 * float(np.percentile(exact_times, 99)),
              "embeddings_bytes": int(n * d * 4)}
    if approximate:
      t0 = time.perf_counter()
      index.meta["approximate_above"] = approximate_above
      spec = index_lib.build_approximate(index)
      index = index_lib.load(folder)
      record["approximate_build_seconds"] = time.perf_counter() - t0
      approx_times, found = _latencies(lambda v: index.search(v, 10), q)
      record.update({
          "approximate_p50_ms": 1e3 * float(np.median(approx_times)),
          "approximate_p99_ms": 1e3 * float(np.percentile(approx_times, 99)),
          "recall_at_10": search.recall_at(found, truth),
          "faiss_index_bytes": (Path(folder) / index_lib.FAISS_FILE).stat().st_size,
          **{f"plan/{k}": v for k, v in spec.items()}})
    record["peak_rss_gb"] = _rss_gb()
  medjax = record.get("approximate_p50_ms", record["exact_p50_ms"]) / 1e3
  peer = record["exact_p50_ms"] / 1e3
  return {**record, "medjax_seconds": medjax, "peer": "exact_jax_topk", "peer_seconds": peer,
          "ratio": peer / medjax, "load_avg_before": load_before, "load_avg_after": os.getloadavg()}


def cases(quick: bool) -> list[timing.Case]:
  queries = 100 if quick else 200
  return [timing.Case(f"retrieval_scale/{n}x{DIMS}_{data}",
                      lambda n=n, data=data: scale_case(n, data, queries=queries))
          for n, data in ((100_000, "real_shaped"), (1_000_000, "gaussian"))]


FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("out", None, "JSON file for the records.", required=True, flag_values=fv)
  flags.DEFINE_list("sizes", ["100000", "1000000"], "Index sizes (vectors).", flag_values=fv)
  flags.DEFINE_integer("queries", 200, "Queries timed per size.", lower_bound=1, flag_values=fv)


def main(argv) -> None:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}")
  try:
    sizes = [int(n) for n in FLAGS.sizes]
  except ValueError:
    raise cli.UserError(f"--sizes={','.join(FLAGS.sizes)}: expected whole numbers") from None
  threads = timing.configure_peers()
  records = []
  for n in sizes:
    data = "gaussian" if n >= 1_000_000 else "real_shaped"
    print(f"retrieval_scale: {n} x {DIMS} {data}", file=sys.stderr, flush=True)
    records.append({**scale_case(n, data, queries=FLAGS.queries), "threads": threads,
                    "cpu_count": os.cpu_count()})
    Path(FLAGS.out).write_text(json.dumps(records, indent=1))
    print(json.dumps(records[-1], indent=1), flush=True)


if __name__ == "__main__":
  cli.run(main, "benchmarks.retrieval_scale", define_flags)
