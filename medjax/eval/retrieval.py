"""Content-based image retrieval: an embedding index, k-nearest queries, P@k, mAP, PR curve.

Relevance is label-based, as in the IRMA CBIR paper: an indexed image is relevant to a
query when it has the query's class (multi-label: shares at least one label). Embeddings
are L2-normalised, so Euclidean ranking equals cosine ranking. Per-query average precision
and precision-recall come from scikit-learn; the curve is the 11-point interpolated
precision averaged over queries (the standard CBIR plot).
"""
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import metrics as skm

RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


@dataclasses.dataclass(frozen=True)
class Index:
  """Unit-norm embeddings ``(n, d)`` with their labels and ids."""
  embeddings: np.ndarray
  labels: np.ndarray
  ids: np.ndarray

  def save(self, path: Path) -> None:
    """Atomic ``.npz`` (no pickles: ids are stored as a unicode array)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, embeddings=self.embeddings, labels=self.labels,
             ids=np.asarray(self.ids, dtype=str))
    tmp.replace(path)

  @classmethod
  def load(cls, path: Path) -> "Index":
    with np.load(path, allow_pickle=False) as f:
      return cls(f["embeddings"], f["labels"], f["ids"])


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def build(embeddings, labels, ids) -> Index:
  return Index(l2_normalize(embeddings), np.asarray(labels), np.asarray(ids, dtype=str))


@jax.jit
def _distances(queries: jax.Array, index: jax.Array) -> jax.Array:
  """Euclidean distances between unit vectors, from one matmul: sqrt(2 - 2 q.x)."""
  sim = jnp.dot(queries, index.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sqrt(jnp.maximum(2.0 - 2.0 * sim, 0.0))


def distances(queries: np.ndarray, index: Index) -> np.ndarray:
  return np.asarray(_distances(l2_normalize(queries), index.embeddings))


def nearest(queries: np.ndarray, index: Index, k: int) -> tuple[np.ndarray, np.ndarray]:
  """``(indices, distances)`` of the ``k`` nearest indexed items per query, nearest first."""
  d = distances(queries, index)
  k = min(k, d.shape[1])
  order = np.argsort(d, axis=1, kind="stable")[:, :k]
  return order, np.take_along_axis(d, order, axis=1)


def relevance(query_labels: np.ndarray, index_labels: np.ndarray) -> np.ndarray:
  """``(queries, items)`` booleans: same class, or at least one shared label."""
  if query_labels.ndim == 1:
    return query_labels[:, None] == index_labels[None, :]
  return (query_labels.astype(bool)[:, None, :] & index_labels.astype(bool)[None, :, :]).any(-1)


def evaluate(query_embeddings: np.ndarray, query_labels: np.ndarray, index: Index,
             ks=(1, 5, 10)) -> dict:
  """mAP, P@k and the interpolated PR curve of every query against ``index``.

  Also ``random_mAP``: the expected mAP of a random ranking (each query's fraction of
  relevant items), the floor a learned embedding must beat.
  """
  d = distances(query_embeddings, index)
  rel = relevance(np.asarray(query_labels), index.labels)
  aps, curves, random_ap = [], [], []
  order = np.argsort(d, axis=1, kind="stable")
  out = {}
  for k in ks:
    out[f"P@{k}"] = float(np.take_along_axis(rel, order[:, :k], axis=1).mean())
  for q in range(len(d)):
    if not rel[q].any():
      continue
    aps.append(skm.average_precision_score(rel[q], -d[q]))
    precision, recall, _ = skm.precision_recall_curve(rel[q], -d[q])
    # Interpolated precision: the best precision at any recall >= each level.
    curves.append([precision[recall >= r].max() for r in RECALL_LEVELS])
    random_ap.append(rel[q].mean())
  out["mAP"] = float(np.mean(aps))
  out["random_mAP"] = float(np.mean(random_ap))
  out["num_queries"] = len(aps)
  out["pr_curve/recall"] = RECALL_LEVELS.tolist()
  out["pr_curve/precision"] = np.mean(curves, axis=0).tolist()
  return out


def plot_pr_curve(scores: dict, path: Path, title: str) -> None:
  """Writes the precision-recall curve as a PNG, as the IRMA paper's figure 1."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
  ax.plot(scores["pr_curve/recall"], scores["pr_curve/precision"], marker="o",
          label=f"mAP {scores['mAP']:.3f}")
  ax.axhline(scores["random_mAP"], color="grey", linestyle="--",
             label=f"random ranking {scores['random_mAP']:.3f}")
  ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower left")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
