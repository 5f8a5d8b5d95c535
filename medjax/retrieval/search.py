"""Nearest neighbours of L2-normalised embeddings: exact in JAX, approximate through faiss.

Similarity is cosine: every vector is L2-normalised, so the inner product is the cosine
and the Euclidean distance reported is ``sqrt(2 - 2 cos)``, which ranks the same way.

* Exact search is one jitted matmul and ``lax.top_k``; queries go in blocks sized so the
  ``(queries, index)`` similarity matrix stays under ``SIM_BUDGET_BYTES``, and the query
  count is padded to a power of two so a server compiles a handful of shapes, not one per
  batch size.
* Approximate search is a faiss index chosen and sized by :func:`plan` (the rule is
  documented there and in ``docs/retrieval.md``); its probe count (``nprobe`` or HNSW's
  ``efSearch``) is tuned at build time by :func:`tune` to reach a recall@10 target
  against exact search on sample queries.
"""
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

SIM_BUDGET_BYTES = 1 << 28
RECALL_TARGET = 0.95
TUNE_QUERIES = 256


def l2_normalize(x, eps: float = 1e-12) -> np.ndarray:
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def to_distance(similarity) -> np.ndarray:
  return np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(similarity, np.float32), 0.0))


@functools.partial(jax.jit, static_argnames="k")
def _top_k(queries: jax.Array, index: jax.Array, k: int):
  sim = jnp.dot(queries, index.T, precision=jax.lax.Precision.HIGHEST)
  return jax.lax.top_k(sim, k)


@jax.jit
def _similarities(queries: jax.Array, index: jax.Array) -> jax.Array:
  return jnp.dot(queries, index.T, precision=jax.lax.Precision.HIGHEST)


def _query_blocks(queries: np.ndarray, n: int):
  """``(start, padded block)``: power-of-two blocks whose similarities fit the budget."""
  cap = max(1, SIM_BUDGET_BYTES // (4 * max(n, 1)))
  cap = 1 << (cap.bit_length() - 1)
  for start in range(0, len(queries), cap):
    block = queries[start:start + cap]
    size = min(cap, 1 << max(len(block) - 1, 0).bit_length())
    pad = np.zeros((size - len(block), queries.shape[1]), np.float32)
    yield start, len(block), np.concatenate([block, pad])


def exact(queries: np.ndarray, index: jax.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
  """``(rows, similarities)`` of the ``k`` most similar indexed vectors, most similar first;
  ``index`` is the ``(N, D)`` normalised embeddings already on the device."""
  k = min(k, index.shape[0])
  rows, sims = [], []
  for _, used, block in _query_blocks(l2_normalize(queries), index.shape[0]):
    s, i = _top_k(jnp.asarray(block), index, k)
    sims.append(np.asarray(s)[:used])
    rows.append(np.asarray(i)[:used])
  return np.concatenate(rows), np.concatenate(sims)


def similarity_blocks(queries: np.ndarray, index: jax.Array):
  """Yields ``(start, (block, N) similarities)`` of every query against the whole index."""
  for start, used, block in _query_blocks(l2_normalize(queries), index.shape[0]):
    yield start, np.asarray(_similarities(jnp.asarray(block), index))[:used]


def memory_budget() -> int:
  """Half the machine's physical memory: the default ceiling for an in-memory index."""
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def plan(n: int, d: int, budget: int | None = None, kind: str = "auto") -> dict:
  """The approximate index for ``n`` vectors of ``d`` dims within ``budget`` bytes.

  * ``nlist`` (IVF cells) is the power of two nearest ``sqrt(n)``, within [16, 65536]:
    cells of about ``sqrt(n)`` vectors balance the coarse search against the scan, and
    training k-means stays cheap (``40 * nlist`` sample vectors).
  * IVF-Flat (full float32 vectors, exact distances within the probed cells) when its
    ``n * d * 4`` bytes fit in half the budget; otherwise IVF-PQ with ``d / 8`` one-byte
    sub-quantisers (``d / 8`` bytes per vector, 16x smaller), whose candidates
    (``RERANK`` times k) are re-ranked exactly from the memory-mapped embeddings.
  * HNSW (32 links per node) only when asked for (``kind='hnsw'``): it answers fastest
    but its graph takes minutes per million vectors to build on a few cores and cannot
    shrink below the full vectors.
  """
  budget = budget or memory_budget()
  nlist = int(min(65536, max(16, 2 ** round(math.log2(max(math.sqrt(n), 1))))))
  nlist = min(nlist, max(1, n // 39))  # faiss wants >= 39 training points per cell.
  if kind == "auto":
    kind = "ivf_flat" if n * d * 4 <= budget // 2 else "ivf_pq"
  if kind not in ("ivf_flat", "ivf_pq", "hnsw"):
    raise ValueError(f"approximate index kind {kind!r}; expected auto, ivf_flat, ivf_pq or hnsw")
  out = {"kind": kind, "n_at_build": int(n), "dims": int(d), "budget_bytes": int(budget)}
  if kind == "hnsw":
    return {**out, "links": 32, "ef_construction": 80}
  out["nlist"] = nlist
  out["train_points"] = int(min(n, 40 * nlist))
  if kind == "ivf_pq":
    m = max(1, d // 8)
    while d % m:
      m -= 1
    out["pq_m"] = m
  return out


RERANK = 10


def build(x: np.ndarray, spec: dict, seed: int = 0):
  """A trained faiss index holding ``x`` (normalised float32 rows) as ``spec`` says."""
  import faiss
  d = x.shape[1]
  metric = faiss.METRIC_INNER_PRODUCT
  if spec["kind"] == "hnsw":
    index = faiss.IndexHNSWFlat(d, spec["links"], metric)
    index.hnsw.efConstruction = spec["ef_construction"]
    index.add(np.ascontiguousarray(x, np.float32))
    return index
  quantizer = faiss.IndexFlatIP(d)
  if spec["kind"] == "ivf_flat":
    index = faiss.IndexIVFFlat(quantizer, d, spec["nlist"], metric)
  else:
    index = faiss.IndexIVFPQ(quantizer, d, spec["nlist"], spec["pq_m"], 8, metric)
  index.cp.seed = seed
  rows = np.sort(np.random.default_rng(seed).choice(len(x), spec["train_points"], replace=False))
  index.train(np.ascontiguousarray(x[rows], np.float32))
  add(index, x)
  return index


def add(index, x: np.ndarray, block: int = 1 << 16) -> None:
  """Adds rows in blocks, so a memory-mapped ``x`` is never copied whole."""
  for start in range(0, len(x), block):
    index.add(np.ascontiguousarray(x[start:start + block], np.float32))


def set_probes(index, spec: dict, probes: int) -> None:
  if spec["kind"] == "hnsw":
    index.hnsw.efSearch = probes
  else:
    index.nprobe = probes


def approximate(index, spec: dict, embeddings: np.ndarray, queries: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
  """``(rows, similarities)`` from the faiss index; IVF-PQ candidates re-ranked exactly."""
  q = l2_normalize(queries)
  k = min(k, index.ntotal)
  set_probes(index, spec, spec["probes"])
  if spec["kind"] != "ivf_pq":
    sims, rows = index.search(q, k)
    return rows, sims
  _, cand = index.search(q, min(index.ntotal, k * RERANK))
  # -1 (faiss's "none") where the probed cells hold fewer than k vectors.
  rows, sims = np.full((len(q), k), -1, np.int64), np.full((len(q), k), -1.0, np.float32)
  for i, c in enumerate(cand):
    c = np.sort(c[c >= 0])
    s = np.asarray(embeddings[c]) @ q[i]
    top = np.argsort(-s, kind="stable")[:k]
    rows[i, :len(top)], sims[i, :len(top)] = c[top], s[top]
  return rows, sims


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
  """Mean fraction of each query's true neighbours that were found."""
  return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def tune(index, spec: dict, embeddings: np.ndarray, device_embeddings: jax.Array,
         target: float = RECALL_TARGET, k: int = 10, seed: int = 0) -> dict:
  """The smallest probe count (powers of two) whose recall@k against exact search reaches
  ``target`` on ``TUNE_QUERIES`` indexed vectors used as queries, each query's own row
  left out of both answers; returns ``spec`` with ``probes`` and the recall measured."""
  n = index.ntotal
  rows = np.random.default_rng(seed).choice(n, min(TUNE_QUERIES, n), replace=False)
  queries = np.asarray(embeddings[np.sort(rows)], np.float32)
  truth, _ = exact(queries, device_embeddings, k + 1)
  own = np.sort(rows)[:, None]
  truth = [t[t != o][:k] for t, o in zip(truth, own)]
  limit = spec.get("nlist", 1024) if spec["kind"] != "hnsw" else 1024
  probes, recall = 1, 0.0
  while True:
    spec = {**spec, "probes": probes}
    found, _ = approximate(index, spec, embeddings, queries, k + 1)
    recall = recall_at([f[f != o][:k] for f, o in zip(found, own)], truth)
    if recall >= target or probes >= limit:
      break
    probes *= 2
  if spec["kind"] == "hnsw":
    probes = max(probes, k + 1)
  return {**spec, "probes": int(probes), "tuned_recall_at_10": recall, "recall_target": target}
