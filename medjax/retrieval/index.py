"""A retrieval index on disk (``<workdir>/retrieval/``): built once, memory-mapped, appended.

Files (all ``.npy`` without pickles, so they load with ``np.load(mmap_mode='r')``):

* ``embeddings.npy``: float32 ``(N, D)``, L2-normalised rows;
* ``labels.npy``: ``(N,)`` class indices, or ``(N, L)`` 0/1 for multi-label data;
* ``ids.npy`` and ``paths.npy``: unicode ``(N,)``, the example ids and their image files
  (``''`` where the file was not known when indexing);
* ``approximate.faiss``: the faiss index, once ``N`` reaches ``approximate_above``;
* ``index.json``: the size, dims, class names and the approximate index's plan, written
  last: a crash mid-append leaves rows past ``size`` that are ignored and overwritten.

Appending writes the new rows at the end of each file and rewrites the ``.npy`` header in
place (numpy leaves room in it for the first axis to grow), and adds the new vectors to
the trained faiss index: nothing already indexed is re-read or re-encoded.
"""
import dataclasses
import functools
import json
import logging
from pathlib import Path

import jax
import numpy as np

from medjax.atomic import save_json
from medjax.retrieval import search

APPROXIMATE_ABOVE = 100_000
FILES = ("embeddings", "labels", "ids", "paths")
META = "index.json"
FAISS_FILE = "approximate.faiss"


@dataclasses.dataclass
class Index:
  embeddings: np.ndarray
  labels: np.ndarray
  ids: np.ndarray
  paths: np.ndarray
  meta: dict
  folder: Path | None = None

  def __len__(self) -> int:
    return int(self.meta["size"])

  @functools.cached_property
  def device_embeddings(self) -> jax.Array:
    """The embeddings on the default device, once, for exact search."""
    return jax.device_put(np.asarray(self.embeddings, np.float32))

  def similarity_blocks(self, queries):
    """Yields ``(start, (block, N) cosine similarities)`` of the queries against every
    indexed item (exact), block by block: what the retrieval metrics rank."""
    return search.similarity_blocks(queries, self.device_embeddings)

  @functools.cached_property
  def faiss_index(self):
    if not self.meta.get("approximate"):
      return None
    import faiss
    return faiss.read_index(str(self.folder / FAISS_FILE))

  @property
  def approximate(self) -> bool:
    return bool(self.meta.get("approximate"))

  def search(self, queries, k: int, exact: bool | None = None):
    """``(rows, distances)`` of the ``k`` nearest per query, nearest first; exact unless
    the index has an approximate part and ``exact`` is not True."""
    queries = np.asarray(queries, np.float32).reshape(len(queries), -1)
    if queries.shape[1] != self.meta["dims"]:
      raise ValueError(f"queries have {queries.shape[1]} dims; the index has {self.meta['dims']}")
    if exact or not self.approximate:
      rows, sims = search.exact(queries, self.device_embeddings, k)
    else:
      rows, sims = search.approximate(self.faiss_index, self.meta["approximate"],
                                      self.embeddings, queries, k)
    return rows, search.to_distance(sims)

  def append(self, embeddings, labels, ids, paths=None) -> "Index":
    """Adds rows; returns the index re-opened (the files on disk are extended in place)."""
    if self.folder is None:
      raise ValueError("only an index saved in a folder can be appended to")
    new = _columns(embeddings, labels, ids, paths)
    if new["embeddings"].shape[1] != self.meta["dims"]:
      raise ValueError(f"new embeddings have {new['embeddings'].shape[1]} dims; the index "
                       f"has {self.meta['dims']}")
    clash = set(map(str, new["ids"])) & set(map(str, self.ids))
    if clash:
      raise ValueError(f"ids already indexed: {sorted(clash)[:5]}")
    size = len(self)
    for name in FILES:
      _append_npy(self.folder / f"{name}.npy", new[name], size)
    meta = {**self.meta, "size": size + len(new["ids"])}
    if self.approximate:
      index = self.faiss_index
      search.add(index, new["embeddings"])
      _write_faiss(index, self.folder / FAISS_FILE)
    save_json(self.folder / META, meta)
    reopened = load(self.folder)
    if not self.approximate and len(reopened) >= meta.get("approximate_above", APPROXIMATE_ABOVE):
      build_approximate(reopened)
      reopened = load(self.folder)
    return reopened


def _columns(embeddings, labels, ids, paths) -> dict:
  ids = np.asarray([str(i) for i in ids])
  if len(set(ids.tolist())) != len(ids):
    raise ValueError("index ids must be unique")
  paths = np.asarray([str(p) for p in (paths if paths is not None else [""] * len(ids))])
  embeddings = search.l2_normalize(embeddings)
  labels = np.asarray(labels)
  if not len(embeddings) == len(labels) == len(ids) == len(paths):
    raise ValueError(f"{len(embeddings)} embeddings, {len(labels)} labels, {len(ids)} ids and "
                     f"{len(paths)} paths: one each per indexed image")
  return {"embeddings": embeddings, "labels": labels, "ids": ids, "paths": paths}


def in_memory(embeddings, labels, ids, paths=None, class_names=()) -> Index:
  """An index that is never saved (exact search only), e.g. on a non-writing process."""
  c = _columns(embeddings, labels, ids, paths)
  return Index(**c, meta={"size": len(c["ids"]), "dims": int(c["embeddings"].shape[1]),
                          "metric": "cosine", "class_names": list(class_names)})


def create(folder, embeddings, labels, ids, paths=None, class_names=(), *,
           approximate_above: int = APPROXIMATE_ABOVE, kind: str = "auto",
           budget: int | None = None) -> Index:
  """Writes a new index to ``folder`` (replacing any) and returns it memory-mapped."""
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  index = in_memory(embeddings, labels, ids, paths, class_names)
  for name in FILES:
    tmp = folder / f"{name}.npy.tmp"
    with tmp.open("wb") as f:
      np.save(f, getattr(index, name), allow_pickle=False)
    tmp.replace(folder / f"{name}.npy")
  (folder / FAISS_FILE).unlink(missing_ok=True)
  meta = {**index.meta, "approximate_above": int(approximate_above), "approximate": None,
          "kind": kind, "budget_bytes": budget}
  save_json(folder / META, meta)
  saved = load(folder)
  if len(saved) >= approximate_above:
    build_approximate(saved)
    saved = load(folder)
  return saved


def build_approximate(index: Index) -> dict:
  """Trains, fills, tunes and saves the faiss index of ``index`` (see ``search.plan``)."""
  spec = search.plan(len(index), index.meta["dims"], index.meta.get("budget_bytes"),
                     index.meta.get("kind", "auto"))
  logging.info("Building the approximate index: %s", spec)
  built = search.build(index.embeddings, spec)
  spec = search.tune(built, spec, index.embeddings, index.device_embeddings)
  _write_faiss(built, index.folder / FAISS_FILE)
  save_json(index.folder / META, {**index.meta, "approximate": spec})
  return spec


def _write_faiss(faiss_index, path: Path) -> None:
  import faiss
  tmp = path.with_name(path.name + ".tmp")
  faiss.write_index(faiss_index, str(tmp))
  tmp.replace(path)


def load(folder, mmap: bool = True) -> Index:
  """The index in ``folder``; ``FileNotFoundError`` naming the file when there is none."""
  folder = Path(folder)
  path = folder / META
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: no retrieval index in {folder}")
  meta = json.loads(path.read_text())
  size = int(meta["size"])
  arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None,
                          allow_pickle=False)[:size] for name in FILES}
  return Index(**arrays, meta=meta, folder=folder)


def _append_npy(path: Path, rows: np.ndarray, size: int) -> None:
  """Writes ``rows`` after the first ``size`` rows of the ``.npy`` at ``path``; rewrites the
  file only when the rows need a wider dtype (longer strings) or the header cannot grow."""
  with path.open("r+b") as f:
    version = np.lib.format.read_magic(f)
    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                             else np.lib.format.read_array_header_2_0(f))
    offset = f.tell()
  wider = np.result_type(dtype, rows.dtype)
  header = _header(wider, (size + len(rows), *shape[1:]), version)
  if fortran or wider != dtype or rows.shape[1:] != tuple(shape[1:]) or len(header) != offset:
    old = np.load(path, allow_pickle=False)[:size]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
      np.save(f, np.concatenate([old.astype(wider), rows.astype(wider)]), allow_pickle=False)
    tmp.replace(path)
    return
  with path.open("r+b") as f:
    f.seek(offset + size * dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)))
    f.truncate()
    f.write(np.ascontiguousarray(rows.astype(dtype)).tobytes())
    f.flush()
    f.seek(0)
    f.write(header)


def _header(dtype, shape, version) -> bytes:
  import io
  buffer = io.BytesIO()
  d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
       "shape": tuple(int(s) for s in shape)}
  if version == (1, 0):
    np.lib.format.write_array_header_1_0(buffer, d)
  else:
    np.lib.format.write_array_header_2_0(buffer, d)
  return buffer.getvalue()
