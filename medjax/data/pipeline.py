"""From a prepared TFDS dataset to global ``jax.Array`` batches on the device mesh.

- Splits: ``config.data.{train,val,test}_split`` are TFDS split expressions
  (``"train+val"``); with ``config.data.val_fraction`` > 0 a validation set is carved
  from the training split, stratified by class and reproducible from ``config.seed``.
- Every process walks the same global stream of encoded records and decodes only its own
  rows of each global batch (process ``p`` of ``P``: rows ``[p * B / P, (p + 1) * B / P)``,
  the rows its devices hold on the mesh). So the global batches, and hence the training
  run, are the same for any number of processes, and a run may resume on another
  topology. The price is that each process reads (not decodes) every encoded record.
- Training streams shuffle-then-repeat deterministically from the seed; augmentation seeds
  come from the example's position in that stream, so resuming at step ``s`` (skipping
  ``s * batch`` encoded records, which is cheap) yields exactly the batches an
  uninterrupted run would have seen.
- Evaluation is exact: every example is seen once, in split order; the stream is padded
  to whole global batches with copies of its first record that carry ``mask`` = 0, so all
  processes run the same number of batches.
- With several processes, process 0 prepares the TFDS records while the others wait: two
  writers of one shared TFDS folder would collide.
"""
import csv
import dataclasses
import functools
import io
import json
import logging
import re
from pathlib import Path

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from medjax import cli, parallel
from medjax.atomic import save_json, save_npy, save_text
from medjax.data import builders, ops, tf_runtime
from medjax.data.splits import stratified_holdout
from medjax.data.builders import class_folders


# <workdir>/data.json: the class order, label kind and source key of the run's data.
DATA_RECORD = "data.json"


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the trainer needs to know about the data, independent of the dataset."""
  name: str
  class_names: tuple[str, ...]
  multi_label: bool
  split_sizes: dict[str, int]
  skipped: tuple[str, ...]
  source_key: str = ""

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _whole_if_shorter(part: str, have: dict[str, int]) -> str:
  """``"train[:n]"`` as ``"train"`` when the split holds at most ``n`` examples (TFDS
  refuses a slice longer than its split); any other part as it is."""
  m = re.fullmatch(r"(\w+)\[:(\d+)\]", part)
  return m[1] if m and int(m[2]) >= have.get(m[1], 0) else part


def _encoded(builder, split: str) -> tf.data.Dataset:
  return builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})


def _ids_and_labels(builder, split: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
  ds = _encoded(builder, split).map(ops.traced(lambda ex: (ex["id"], ex[label_key])))
  ids, labels = [], []
  for i, y in ds.as_numpy_iterator():
    ids.append(i.decode())
    labels.append(y)
  return np.asarray(ids, dtype=object), np.asarray(labels)


def _filter_ids(ds: tf.data.Dataset, ids: set[str], keep: bool) -> tf.data.Dataset:
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(sorted(ids) or [""], tf.string),
                                          tf.ones(max(len(ids), 1), tf.int32)), default_value=0)
  want = 1 if keep else 0
  return ds.filter(ops.traced(lambda ex: tf.equal(table.lookup(ex["id"]), want)))


def _split_csv(rows) -> str:
  """The ``path,label,split,id,group`` CSV of a drawn split: ``dataset=<that file>`` reuses it."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["path", "label", "split", "id", "group"])
  writer.writerows(rows)
  return buffer.getvalue()


def _chain(first, second):
  """``first`` (deterministic, given a zero seed) then ``second`` with the example's seed."""
  def fn(example, seed):
    return second(first(example, tf.zeros([2], tf.int64)), seed)
  return fn


def check_same_source(config, workdirs) -> None:
  """Refuses a workdir whose run read ``config.data`` when its source held other files:
  its results or checkpoint are not of the data as it is now (an absent source passes)."""
  records = [Path(w) / DATA_RECORD for w in workdirs if (Path(w) / DATA_RECORD).is_file()]
  if not records:
    return
  d = config.data
  now = builders.source_key(d.name, manual_dir=d.manual_dir, tfds_dir=d.tfds_dir,
                            split_fractions=d.get("split_fractions", (0.7, 0.1, 0.2)),
                            split_seed=d.get("split_seed", 0))
  for record in records:
    then = json.loads(record.read_text()).get("source_key")
    if then and now and then != now:
      finished = (record.parent / "results.json").is_file()
      raise cli.UserError(
          f"{record.parent} holds a run {'finished' if finished else 'started'} on {d.name} "
          f"when it held other files (source key {then}, now {now}: files added, removed or "
          f"changed since), so {'its results are not of' if finished else 'resuming would mix it with'}"
          f" the data as it is now; use a new --workdir, or restore the data as it was")


class InputPipeline:
  """Builds the train stream and the exact eval batches for ``config.data`` and ``config.pp_*``."""

  def __init__(self, config, workdir: str | Path, mesh: jax.sharding.Mesh):
    tf_runtime.run_graphs_as_written()  # Before the builders start TensorFlow.
    self.config = config
    self.workdir = Path(workdir)
    self.mesh = mesh
    d = config.data
    get_builder = functools.partial(builders.get_builder, d.name, manual_dir=d.manual_dir,
                                    tfds_dir=d.tfds_dir, on_bad_file=d.on_bad_file,
                                    split_fractions=d.get("split_fractions", (0.7, 0.1, 0.2)),
                                    split_seed=d.get("split_seed", 0))
    if jax.process_index() == 0:
      self.builder = get_builder()
    parallel.barrier(f"prepared {d.name}")
    if jax.process_index() != 0:  # Finds the records ready (or prepares a host-local copy).
      self.builder = get_builder()
    # Builders expose either "label" (class index) or "labels" (multi-hot float vector),
    # and always class_names() in label order.
    multi_label = "labels" in self.builder.info.features
    self.label_key = "labels" if multi_label else "label"
    class_names = tuple(self.builder.class_names())

    self.splits, val_fraction = self._resolve_splits()
    self._split_ds = {}
    for role in ("train", "val", "test"):
      split = self.splits.get(role)
      if split:
        self._split_ds[role] = _encoded(self.builder, split)
    if val_fraction:
      ids, labels = _ids_and_labels(self.builder, self.splits["train"], self.label_key)
      group_of = getattr(self.builder, "group_of", None)
      groups = {i: g for i in ids if (g := group_of(i))} if group_of else None
      held = stratified_holdout(ids, labels, val_fraction, config.seed, groups)
      sizes = {"train": len(ids) - len(held)}
      if held:
        base = self._split_ds["train"]
        self._split_ds["train"] = _filter_ids(base, held, keep=False)
        self._split_ds["val"] = _filter_ids(base, held, keep=True)
        sizes["val"] = len(held)
      else:  # Too few images a class for one: no validation measures, nothing fitted on val.
        logging.warning("config.data.val_fraction=%s of %d training images holds out none: "
                        "no validation set", val_fraction, len(ids))
    else:
      sizes = {role: self.builder.info.splits[self.splits[role]].num_examples
               for role in self._split_ds if role != "test"}
    if "test" in self._split_ds:
      sizes["test"] = self.builder.info.splits[self.splits["test"]].num_examples
    self.info = DataInfo(name=d.name, class_names=class_names, multi_label=multi_label,
                         split_sizes=sizes, skipped=tuple(class_folders.skipped_files(
                             self.builder)), source_key=getattr(self.builder, "source_key", ""))
    if jax.process_index() == 0:
      # What tools over the finished run (predict, explain, export) need of the data, so
      # they run where the raw images are not.
      self.workdir.mkdir(parents=True, exist_ok=True)
      save_json(self.workdir / DATA_RECORD, {
          "name": d.name, "class_names": list(class_names), "multi_label": multi_label,
          "source_key": self.info.source_key, "skipped": list(self.info.skipped)})
      if self.info.skipped:  # Every run says so, not only the one that prepared the copy.
        logging.warning("%d bad file(s) of %s skipped (config.data.on_bad_file='skip'; all "
                        "listed in %s), e.g. %s", len(self.info.skipped), d.name,
                        self.workdir / DATA_RECORD, ", ".join(self.info.skipped[:5]))
      if getattr(self.builder, "assigned_splits", False):
        save_text(self.workdir / "data_split.csv", _split_csv(self.builder.split_table()))
    self._preprocessed = {}
    self._context = {}  # The statistics pass preprocesses with no statistics yet.
    self._context = self._training_statistics()

  def _resolve_splits(self) -> tuple[dict[str, str], float]:
    """``({role: TFDS split}, val_fraction)`` as configured, adapted to a dataset by path.

    A folder or CSV given by path has the splits it has: its ``val`` split (when not
    empty) is the validation set instead of a holdout carved from train, and a role whose
    split it lacks is left out (evaluation then uses what exists).
    """
    d = self.config.data
    splits = {role: d.get(f"{role}_split") for role in ("train", "val", "test")}
    if not builders.is_path(d.name):
      return splits, d.val_fraction
    have = {name: s.num_examples for name, s in self.builder.info.splits.items()}
    val_fraction = d.val_fraction
    if not splits["val"] and have.get("val"):
      splits["val"], val_fraction = "val", 0.0
    for role, split in list(splits.items()):
      # A smoke config's "train[:768]" on a smaller dataset of the user's: all of train.
      split = splits[role] = "+".join(_whole_if_shorter(p, have) for p in split.split("+")
                                      ) if split else split
      parts = {p.split("[")[0] for p in (split or "").split("+") if p}
      if parts - set(have):
        if role == "train":
          raise builders.by_path.DatasetError(
              f"{d.name} has the splits {sorted(have)}, not {split!r}; set "
              f"config.data.train_split to one of them")
        splits[role] = ""
    return splits, val_fraction

  # -- statistics of the training split that preprocessing needs -------------------------
  def _training_statistics(self) -> dict:
    """Computes (once, then loads from the workdir) the mean image if ``subtract_mean`` is used.

    Every process computes the same float64 sums in the same order, so a process that finds
    process 0's file (renamed into place whole) loads exactly what it would have computed.
    """
    pp_eval = self.config.pp_eval
    if "subtract_mean" not in pp_eval:
      return {}
    path = self.workdir / "mean_image.npy"
    if path.exists():
      return {"mean_image": np.load(path, allow_pickle=False)}
    prefix = ops.split_at_context(pp_eval)[0]  # The ops whose output the mean is taken of.
    if self.config.data.cache == "preprocessed":
      # The training stream caches the same prefix (see train_iterator): images are decoded
      # and equalised once for both.
      ds = self._cached(self._split_ds["train"], prefix).map(
          ops.traced(lambda ex: ex["image"]))
    else:
      fn = ops.compose(prefix)
      ds = self._split_ds["train"].map(
          ops.traced(lambda ex: fn(ex, tf.zeros([2], tf.int64))["image"]),
          num_parallel_calls=tf.data.AUTOTUNE)
    total, count = None, 0
    for batch in ds.batch(256).as_numpy_iterator():
      s = batch.astype(np.float64).sum(0)
      total = s if total is None else total + s
      count += len(batch)
    mean = (total / count).astype(np.float32)
    if jax.process_index() == 0:
      save_npy(path, mean)
    return {"mean_image": mean}

  # -- streams ------------------------------------------------------------------------------
  def _local_batch(self, global_batch: int) -> int:
    if global_batch % jax.process_count():
      raise ValueError(f"batch size {global_batch} is not divisible by the "
                       f"{jax.process_count()} processes")
    local = global_batch // jax.process_count()
    if global_batch % self.mesh.size:
      raise ValueError(f"batch size {global_batch} is not divisible by the {self.mesh.size} "
                       f"devices of the mesh")
    return local

  def _select(self, ex):
    return {"image": ex["image"], "label": ex[self.label_key]}

  @staticmethod
  def _own_rows(ds: tf.data.Dataset, global_batch: int, local: int) -> tf.data.Dataset:
    """Keeps this process's rows of every global batch of an enumerated ``(i, ex)`` stream."""
    me = jax.process_index()
    return ds.filter(ops.traced(lambda i, ex: tf.equal(i % global_batch // local, me)))

  def steps_per_epoch(self) -> int:
    return self.info.split_sizes["train"] // self.config.batch_size

  def train_iterator(self, start_step: int = 0):
    """Yields global training batches from step ``start_step`` on, forever."""
    cfg = self.config
    local = self._local_batch(cfg.batch_size)
    ds = self._split_ds["train"]
    prefix, rest = ops.split_deterministic_prefix(cfg.pp_train)
    if cfg.data.cache == "preprocessed" and prefix:
      # Ops that need the training statistics run after the cache, so that the cached part is
      # the one the statistics pass already filled; they are deterministic, and ``rest`` keeps
      # its own seeds.
      prefix, after = ops.split_at_context(prefix)
      ds = self._cached(ds, prefix) if prefix else ds
      pp = _chain(self.preprocess_fn(after), self.preprocess_fn(rest))
    else:
      ds = ds.cache() if cfg.data.cache == "encoded" else ds
      pp = self.preprocess_fn(cfg.pp_train)
    n = self.info.split_sizes["train"]
    ds = ds.shuffle(min(n, cfg.data.shuffle_buffer), seed=cfg.seed,
                    reshuffle_each_iteration=True).repeat().enumerate()
    ds = self._own_rows(ds.skip(start_step * cfg.batch_size), cfg.batch_size, local)
    seed = tf.constant(cfg.seed, tf.int64)
    ds = ds.map(ops.traced(lambda i, ex: self._select(pp(ex, tf.stack([seed, i])))),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(2)
    sharding = parallel.batch_sharding(self.mesh)
    for batch in ds.as_numpy_iterator():
      yield parallel.to_global(batch, sharding)

  def _cached(self, ds: tf.data.Dataset, pp: str) -> tf.data.Dataset:
    """``ds`` with the deterministic ops ``pp`` applied once and kept in memory.

    Decoding, resizing and CLAHE then run in the first epoch only; the dataset object is
    kept per (split, pp), so repeated evaluations reuse it too.
    """
    key = (id(ds), pp)
    if key not in self._preprocessed:
      fn = self.preprocess_fn(pp)
      zero = tf.zeros([2], tf.int64)
      self._preprocessed[key] = ds.map(ops.traced(lambda ex: fn(ex, zero)),
                                       num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=True).cache()
    return self._preprocessed[key]

  def preprocess_fn(self, pp: str):
    """``fn(example, seed) -> example`` of the named ops ``pp``, with this run's training
    statistics (the mean image) for the ops that need them: what tools that preprocess
    images of their own (retrieval queries) call."""
    return ops.compose(pp, self._context)

  def has_split(self, role: str) -> bool:
    return role in self._split_ds

  def eval_batches(self, role: str, batch_size: int | None = None, pp: str | None = None, *,
                   keep: bool = True):
    """Yields ``(global batch with 'mask', ids of its unmasked rows)`` covering split ``role``
    exactly once, in split order (the padding is at the end of the last batch).

    ``keep=False`` bypasses the in-memory cache of preprocessed images for a pass that is
    made once (feature extraction): at 864 px the chest X-rays' train split alone would
    hold 47 GB.
    """
    cfg = self.config
    global_batch = batch_size or cfg.eval_batch_size
    local = self._local_batch(global_batch)
    split = self._split_ds[role]
    n = self.info.split_sizes[role]
    padding = -n % global_batch
    pp = pp or cfg.pp_eval
    if cfg.data.cache == "preprocessed" and keep:
      split, pp = self._cached(split, pp), ""
    ds = split.concatenate(split.take(1).repeat(padding)).enumerate()
    fn = self.preprocess_fn(pp)
    zero = tf.zeros([2], tf.int64)
    ds = self._own_rows(ds, global_batch, local).map(
        ops.traced(lambda i, ex: {**self._select(fn(ex, zero)),
                                  "mask": tf.cast(i < n, tf.float32)}),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local).prefetch(2)
    ids = self._split_ds[role].map(ops.traced(lambda ex: ex["id"])).batch(global_batch)
    sharding = parallel.batch_sharding(self.mesh)
    for batch, batch_ids in zip(ds.as_numpy_iterator(), ids.as_numpy_iterator()):
      yield parallel.to_global(batch, sharding), [i.decode() for i in batch_ids]

  # -- what reports need: labels, counts and pictures, without running the model ---------
  def ids_and_labels(self, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Every example's id and label of split ``role``, in split order (nothing decoded)."""
    ds = self._split_ds[role].map(ops.traced(lambda ex: (ex["id"], ex[self.label_key])))
    ids, labels = [], []
    for i, y in ds.as_numpy_iterator():
      ids.append(i.decode())
      labels.append(y)
    return np.asarray(ids, dtype=object), np.asarray(labels)

  def class_counts(self) -> dict[str, dict[str, int]]:
    """``{role: {class: examples}}`` (multi-label: examples carrying each label)."""
    counts = {}
    for role in self._split_ds:
      _, labels = self.ids_and_labels(role)
      per = (labels.sum(0) if self.info.multi_label
             else np.bincount(labels.astype(int), minlength=self.info.num_classes))
      counts[role] = {c: int(n) for c, n in zip(self.info.class_names, per)}
    return counts

  def thumbnails(self, role: str, ids, size: int = 160) -> dict[str, np.ndarray]:
    """``{id: uint8 RGB image}`` of the given examples, shorter side ``size``, for reports."""
    if not ids:
      return {}
    fn = ops.compose(f"decode(3)|resize_short({size})")
    zero = tf.zeros([2], tf.int64)
    ds = _filter_ids(self._split_ds[role], set(ids), keep=True).map(
        ops.traced(lambda ex: (ex["id"],
                               tf.cast(tf.round(fn(ex, zero)["image"] * 255), tf.uint8))))
    return {i.decode(): image for i, image in ds.as_numpy_iterator()}
