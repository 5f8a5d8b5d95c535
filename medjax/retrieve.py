"""Query the retrieval index of a finished run (supervised, fine-tuned or frozen-feature).

  python -m medjax.retrieve --workdir=W [--k=10] IMAGE ...
  python -m medjax.retrieve --workdir=W --split=test     # mAP, P@k and the PR curve
  python -m medjax.retrieve --workdir=W --add=FOLDER_OR_CSV [--label=CLASS] [IMAGE ...]

Each IMAGE (an image file, DICOM included, as ``medjax.explain`` and ``medjax.classify``
take them) is a query: it goes through the run's own evaluation preprocessing and model
(:mod:`medjax.inference`) into the space of the run's index (``<workdir>/retrieval/``:
``pre_logits`` for supervised runs, the pooled vector for frozen ``avgpool`` runs); the
index answers exactly or, above its size threshold, approximately (``--exact`` forces
exact search). Prints, per query, ``rank<TAB>id<TAB>label<TAB>distance`` for the k
nearest (distance: Euclidean between unit vectors, ``sqrt(2 - 2 cos)``).
``--split=test`` instead scores the test queries the run saved against its index, for
every kind of run (VLAD and CAE runs included, whose encoders cannot embed new images).
``--add`` appends images (files, folders, or a CSV with ``path`` and ``label`` columns, as
``medjax.predict`` reads them; ``--label`` for those without one) to the index in place,
without rebuilding it; their id is their path. IMAGEs given with ``--add`` search the
grown index.
"""
import json
from pathlib import Path

from absl import flags

from medjax import cli

import numpy as np  # noqa: I001 -- after cli, which quiets TensorFlow's start-up logging.

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "Workdir of a finished run.", required=True, flag_values=fv)
  flags.DEFINE_string("split", None, "Split of the run (test) whose saved queries are scored "
                      "against its index, instead of IMAGE arguments.", flag_values=fv)
  flags.DEFINE_integer("k", 10, "Neighbours printed per query image.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_bool("exact", False, "Exact search even where the index is approximate.", flag_values=fv)
  flags.DEFINE_multi_string("add", [], "Image, folder or CSV to append to the index "
                            "(repeatable).", flag_values=fv)
  flags.DEFINE_string("label", None, "Class of the --add images that have no label column.", flag_values=fv)


def label_name(label, names) -> str:
  label = np.asarray(label)
  if label.ndim == 0:
    return names[int(label)] if names else str(int(label))
  return ",".join(n for n, on in zip(names, label) if on) or "none"


def embed_files(run, paths) -> np.ndarray:
  """The run-space embedding of each image file; ``UserError`` naming an unreadable one."""
  import jax
  from medjax import inference
  from medjax.retrieval import runs
  try:
    embed = jax.jit(runs.embedder(run))
  except ValueError as e:
    raise cli.UserError(f"{e}; score its saved queries with --split=test") from None
  out = []
  for start in range(0, len(paths), 32):
    images = []
    for path in map(Path, paths[start:start + 32]):
      encoded, why = inference.read_image(path)
      if encoded is None:
        raise cli.UserError(f"{path} {why}")
      images.append(run.preprocess(encoded))
    out.append(np.asarray(embed(run.variables, np.stack(images))))
  return np.concatenate(out)


def add_images(run, index, inputs, default_label):
  """Appends the images of ``inputs`` with their labels; returns the grown index."""
  from medjax import inference
  paths, labels = inference.expand_inputs(inputs)
  names = list(run.class_names)
  rows = []
  for path, label in zip(paths, labels):
    label = label or default_label
    if not label:
      raise cli.UserError(f"{path} has no label: give --label=CLASS or a CSV label column")
    parts = label.split("|")
    unknown = [c for c in parts if c not in names]
    if unknown:
      raise cli.UserError(f"{path}: label {label!r} names class(es) {unknown} the run does "
                          f"not have; its classes are {names}")
    if np.asarray(index.labels).ndim == 2:  # Multi-label data: multi-hot rows.
      rows.append([float(c in parts) for c in names])
    else:
      rows.append(names.index(parts[0]))
  ids = [str(Path(p).resolve()) for p in paths]
  try:
    return index.append(embed_files(run, paths), np.asarray(rows), ids, ids)
  except ValueError as e:
    raise cli.UserError(f"--add: {e}") from None


def main(argv):
  queries = argv[1:]
  if queries and FLAGS.split:
    raise cli.UserError(f"give query images or --split={FLAGS.split}, not both: --split scores "
                        f"the run's saved queries")
  if not queries and not FLAGS.split and not FLAGS.add:
    raise cli.UserError("give query IMAGE files, --split=test or --add=IMAGES")
  from medjax.data import tf_runtime
  tf_runtime.configure()
  from medjax import inference
  from medjax.retrieval import runs
  index = runs.open_index(FLAGS.workdir)
  names = tuple(index.meta.get("class_names") or ())
  if FLAGS.add:
    before = len(index)
    index = add_images(inference.load(FLAGS.workdir), index, FLAGS.add, FLAGS.label)
    print(f"added {len(index) - before} images; the index holds {len(index)}")
  if queries:
    run = inference.load(FLAGS.workdir)
    names = names or run.class_names
    rows, dists = index.search(embed_files(run, queries), FLAGS.k, exact=FLAGS.exact)
    for path, row, dist in zip(queries, rows, dists):
      print(f"# {path}")
      for rank, (i, d) in enumerate(zip(row, dist), start=1):
        print(f"{rank}\t{index.ids[i]}\t{label_name(index.labels[i], names)}\t{d:.4f}")
  if FLAGS.split:
    from medjax.eval import retrieval
    path = runs.folder(FLAGS.workdir) / f"queries_{FLAGS.split}.npz"
    if not path.is_file():
      have = sorted(p.stem[len("queries_"):] for p in path.parent.glob("queries_*.npz"))
      saved = f"its splits are {have}" if have else "the run saved no queries"
      raise cli.UserError(f"--split={FLAGS.split}: {path} not found; {saved}")
    with np.load(path, allow_pickle=False) as f:
      scores = retrieval.evaluate(f["embeddings"], f["labels"], index)
    plot = Path(FLAGS.workdir) / "plots" / f"pr_curve_{FLAGS.split}.png"
    retrieval.plot_pr_curve(scores, plot, f"{FLAGS.split} queries")
    print(json.dumps({k: v for k, v in scores.items() if not k.startswith("pr_curve")},
                     indent=2))
    print(f"precision-recall curve: {plot}")


if __name__ == "__main__":
  cli.run(main, "medjax.retrieve", define_flags)
