"""The retrieval index of a run: written by both pipelines, queried by retrieve and serve.

Both pipelines call :func:`index_and_score` once, after training, with the training
split's embeddings as the index and the test split's as queries (supervised runs:
``pre_logits``; frozen-feature runs: the aggregated, L2-normalised vectors their SVM
sees: pooled, VLAD or CAE codes). It writes ``<workdir>/retrieval/`` (the index, and the
test queries as ``queries_test.npz`` so the metrics can be recomputed without the data),
``plots/pr_curve.png``, and returns the retrieval metrics for ``results.json``.

:func:`embedder` maps new images to the same space for runs that :mod:`medjax.inference`
loads (supervised, and frozen ``avgpool`` at one scale).
"""
import logging
from pathlib import Path

import numpy as np

from medjax import cli
from medjax.atomic import save_npz
from medjax.eval import retrieval as metrics
from medjax.retrieval import index as index_lib

QUERIES = "queries_test.npz"


def folder(workdir) -> Path:
  return Path(workdir) / "retrieval"


def open_index(workdir) -> index_lib.Index:
  """The index a finished run wrote, for the tools that query it (an older run's
  ``index.npz`` is converted once); ``cli.UserError`` naming what is missing otherwise."""
  where = folder(workdir)
  if Path(workdir).is_file():
    raise cli.UserError(f"--workdir={workdir} is a file; give the workdir of a finished run")
  if (where / index_lib.META).is_file():
    return index_lib.load(where)
  if (where / "index.npz").is_file():
    with np.load(where / "index.npz", allow_pickle=False) as f:
      return index_lib.create(where, f["embeddings"], f["labels"], f["ids"])
  if not (Path(workdir) / "results.json").is_file():
    raise cli.UserError(f"--workdir={workdir} holds no finished run (no results.json)")
  raise cli.UserError(f"{where / index_lib.META} not found: the run wrote no retrieval index "
                      f"(supervised runs need config.retrieval=True)")


def index_and_score(workdir, data, train: dict, test: dict, prefix: str = "") -> dict:
  """Indexes ``train`` and scores ``test`` against it; ``train``/``test`` hold
  ``embeddings``, ``labels`` and ``ids``. ``workdir`` None (a non-writing process) writes
  nothing. Keys are prefixed with ``prefix`` (e.g. ``"retrieval/"``)."""
  names = data.info.class_names
  if workdir is None:
    index = index_lib.in_memory(train["embeddings"], train["labels"], train["ids"],
                                class_names=names)
  else:
    index = index_lib.create(folder(workdir), train["embeddings"], train["labels"],
                             train["ids"], image_paths(data, train["ids"]), names)
    save_npz(folder(workdir) / QUERIES, embeddings=np.asarray(test["embeddings"], np.float32),
             labels=np.asarray(test["labels"]), ids=np.asarray([str(i) for i in test["ids"]]))
  scores = metrics.evaluate(test["embeddings"], test["labels"], index)
  if workdir is not None:
    metrics.plot_pr_curve(scores, Path(workdir) / "plots" / "pr_curve.png",
                          f"{data.info.name}: test queries vs train index")
  return {f"{prefix}{k}": v for k, v in scores.items()}


def frozen_run(workdir, data, codes: dict, labels: dict, test_ids) -> dict:
  """:func:`index_and_score` for the frozen-feature pipeline (its one hook): the train
  codes in split order, queried with the evaluation split's (``test_ids``, which the
  pipeline has already read)."""
  train_ids, train_labels = data.ids_and_labels("train")
  if not np.array_equal(train_labels, labels["train"]):
    raise RuntimeError("the train split's records and its features disagree on labels")
  train = {"embeddings": codes["train"], "labels": labels["train"], "ids": train_ids}
  test = {"embeddings": codes["test"], "labels": labels["test"], "ids": test_ids}
  return index_and_score(workdir, data, train, test, prefix="retrieval/")


def image_paths(data, ids) -> list[str]:
  """The image file of each id, from the dataset's own listing ('' where not found: the
  index still works, only thumbnails are missing)."""
  from medjax.data import builders, paths
  builder, d = data.builder, data.config.data
  try:
    if builders.is_path(d.name):
      root = builder.root
    elif hasattr(builder, "_folder_root"):
      root = builder._folder_root
    else:
      root = paths.dataset_dir(d.name.partition("/")[0], d.manual_dir)
    entries, _ = builder._list(Path(root)).result()
  except Exception as e:  # The listing needs the raw files; the index does not.
    logging.warning("Image paths for the retrieval index are unknown (%s); thumbnails will be "
                    "missing.", e)
    return [""] * len(ids)
  where = {e.id: str(e.path) for items in entries.values() for e in items}
  return [where.get(str(i), "") for i in ids]


def embedder(run):
  """``embed(variables, images) -> (B, D)`` in the run's index space (unnormalised), for a
  :class:`medjax.inference.Run`: ``pre_logits`` of a supervised run, the aggregated codes
  (the SVM's input) of a frozen-feature run; ``ValueError`` where the run has none."""
  if run.embed is None:
    raise ValueError(f"new images cannot be embedded for the run in {run.workdir}")
  return run.embed
