"""Content-based image retrieval metrics: P@k, mAP and the 11-point PR curve, with intervals.

Relevance is label-based, as in the IRMA CBIR paper: an indexed image is relevant to a
query when it has the query's class (multi-label: shares at least one label). Ranking is
by cosine similarity over the whole index (exact: the index's ``similarity_blocks``).
Per-query average precision and precision-recall come from scikit-learn; the curve is the
11-point interpolated precision averaged over queries (the standard CBIR plot).

Every measure is a mean over queries, so its 95 % interval comes from the same stratified
bootstrap as the clinical measures (:mod:`medjax.eval.bootstrap`: queries resampled within
their class, 2,000 resamples, seed 0; multi-label queries resampled whole, unstratified).
"""
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from medjax.eval import bootstrap

RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


def relevance(query_labels: np.ndarray, index_labels: np.ndarray) -> np.ndarray:
  """``(queries, items)`` booleans: same class, or at least one shared label."""
  query_labels, index_labels = np.asarray(query_labels), np.asarray(index_labels)
  if query_labels.ndim == 1:
    return query_labels[:, None] == index_labels[None, :]
  return (query_labels.astype(bool)[:, None, :] & index_labels.astype(bool)[None, :, :]).any(-1)


def random_average_precision(relevant: int, items: int) -> float:
  """The expected AP of a uniformly random ranking of ``items`` holding ``relevant`` ones
  (Bestgen, 2015): ``(R-1)/(N-1) + H_N (N-R) / (N (N-1))``. Why: the fraction ``R/N`` is
  only its large-``R`` limit; with one relevant item in 100 the floor is 0.052, not 0.01."""
  r, n = relevant, items
  if n == 1:
    return float(r)
  harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
  return (r - 1) / (n - 1) + harmonic * (n - r) / (n * (n - 1))


def per_query(query_embeddings, query_labels, index, ks=(1, 5, 10)) -> dict:
  """Per-query ``P@k`` ``(Q,)``, ``ap`` and ``curve`` ``(Q, 11)`` (NaN for a query with no
  relevant item) and ``base`` (a random ranking's expected AP for that query).
  ``index`` is a :class:`medjax.retrieval.index.Index` or anything with its ``labels`` and
  ``similarity_blocks``: the metrics rank what the index scores and know nothing of search."""
  q = len(query_embeddings)
  out = {f"P@{k}": np.zeros(q) for k in ks}
  out.update(ap=np.full(q, np.nan), curve=np.full((q, len(RECALL_LEVELS)), np.nan),
             base=np.zeros(q))
  index_labels = np.asarray(index.labels)
  for start, sims in index.similarity_blocks(query_embeddings):
    rel = relevance(np.asarray(query_labels)[start:start + len(sims)], index_labels)
    order = np.argsort(-sims, axis=1, kind="stable")
    for k in ks:
      out[f"P@{k}"][start:start + len(sims)] = np.take_along_axis(rel, order[:, :k], 1).mean(1)
    for j in range(len(sims)):
      if not rel[j].any():
        continue
      precision, recall, _ = skm.precision_recall_curve(rel[j], sims[j])
      out["ap"][start + j] = -np.sum(np.diff(recall) * precision[:-1])
      # Interpolated precision: the best precision at any recall >= each level, over the
      # ranks only: scikit-learn's last point (recall 0, precision 1) is no rank's, and
      # would make every query's precision at recall 0 read 1.
      precision, recall = precision[:-1], recall[:-1]
      out["curve"][start + j] = [precision[recall >= r].max() for r in RECALL_LEVELS]
      out["base"][start + j] = random_average_precision(int(rel[j].sum()), rel.shape[1])
  return out


def evaluate(query_embeddings, query_labels, index, ks=(1, 5, 10), *,
             resamples: int = bootstrap.RESAMPLES, seed: int = bootstrap.SEED) -> dict:
  """mAP, P@k and the PR curve of every query against ``index``, with 95 % intervals.

  ``random_mAP`` is the expected mAP of a random ranking (exact, per query), the floor a
  learned embedding must beat. P@k averages all queries; mAP and the curve the queries
  with a relevant item.
  """
  query_labels = np.asarray(query_labels)
  v = per_query(query_embeddings, query_labels, index, ks)
  has = ~np.isnan(v["ap"])
  out = {f"P@{k}": float(v[f"P@{k}"].mean()) for k in ks}
  out["mAP"] = float(v["ap"][has].mean()) if has.any() else float("nan")
  out["random_mAP"] = float(v["base"][has].mean()) if has.any() else float("nan")
  out["num_queries"] = int(has.sum())
  out["pr_curve/recall"] = RECALL_LEVELS.tolist()
  out["pr_curve/precision"] = (v["curve"][has].mean(0).tolist() if has.any()
                               else [float("nan")] * len(RECALL_LEVELS))
  if not has.any() or not resamples:
    return out
  strata = query_labels if query_labels.ndim == 1 else np.zeros(len(query_labels))
  ap, curve = np.nan_to_num(v["ap"]), np.nan_to_num(v["curve"])
  stats = {f"P@{k}": (lambda w, x=v[f"P@{k}"]: w @ x / len(x)) for k in ks}
  stats["mAP"] = lambda w: (w[:, has] @ ap[has]) / w[:, has].sum(1)
  curves = []
  for w in bootstrap.multiplicities(strata, resamples, seed):
    curves.append((w[:, has] @ curve[has]) / w[:, has].sum(1, keepdims=True))
  out.update(bootstrap._collect(strata, stats, resamples, seed))
  low, high = np.nanpercentile(np.concatenate(curves), [2.5, 97.5], axis=0)
  out["pr_curve/precision/ci95_low"] = low.tolist()
  out["pr_curve/precision/ci95_high"] = high.tolist()
  out["bootstrap/resamples"] = resamples
  return out


def plot_pr_curve(scores: dict, path: Path, title: str) -> None:
  """Writes the precision-recall curve (with its 95 % band when known) as a PNG, as the
  IRMA paper's figure 1."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
  recall = scores["pr_curve/recall"]
  ax.plot(recall, scores["pr_curve/precision"], marker="o", label=f"mAP {scores['mAP']:.3f}")
  if "pr_curve/precision/ci95_low" in scores:
    ax.fill_between(recall, scores["pr_curve/precision/ci95_low"],
                    scores["pr_curve/precision/ci95_high"], alpha=0.2, label="95 % interval")
  ax.axhline(scores["random_mAP"], color="grey", linestyle="--",
             label=f"random ranking {scores['random_mAP']:.3f}")
  ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower left")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
