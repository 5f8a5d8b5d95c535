"""TFDS builders, one module per dataset, chosen by ``config.data.name``.

``config.data.name`` is a key of ``_BUILDERS``, optionally followed by ``/<config>`` for
builders with several TFDS builder configs (``"irma/anatomy9"``); without it a builder's
first config is used. Any other name that is a path (``/data/my_study``,
``~/study.csv``, ``./images``) is the user's own dataset (:mod:`by_path`).

Every prepared copy lives in ``<tfds_dir>/<name>/<source key>/``: the key
(:func:`medjax.data.paths.source_key`) covers the raw source's location and content and
the builder's version, so an edited or different source is prepared (and validated) again
instead of a copy of other data being reused.
"""
import importlib
from pathlib import Path

import tensorflow_datasets as tfds

from medjax import cli
from medjax.data import paths, validate
from medjax.data.builders import by_path

# config.data.name -> "module:Class"; the raw files live in <data_dir>/<name>/.
_BUILDERS = {
    "chest_xray": "medjax.data.builders.chest_xray:ChestXray",
    "dicom_folder": "medjax.data.builders.dicom_folder:DicomFolder",
    "image_folder": "medjax.data.builders.image_folder:ImageFolder",
    "imageclef2015": "medjax.data.builders.imageclef2015:Imageclef2015",
    "imageclef2016": "medjax.data.builders.imageclef2016:Imageclef2016",
    "irma": "medjax.data.builders.irma:Irma",
    "kvasir": "medjax.data.builders.kvasir:Kvasir",
    "mini_mit": "medjax.data.builders.mini_mit:MiniMit",
}
def names() -> list[str]:
  return sorted(_BUILDERS)


class UnknownDataset(cli.UserError, KeyError):
  """A ``config.data.name`` that is neither a known dataset nor an existing path."""

  def __str__(self):
    return str(self.args[0])


def is_path(name: str) -> bool:
  """Whether ``name`` names a folder or CSV rather than a dataset of ``_BUILDERS``."""
  if name.partition("/")[0] in _BUILDERS:
    return False
  return (name.startswith(("/", "~", ".")) or "/" in name or name.lower().endswith(".csv")
          or Path(name).exists())


def get_builder(name: str, *, manual_dir: str | None = None, tfds_dir: str | None = None,
                on_bad_file: str = "fail", prepare: bool = True,
                split_fractions=(0.7, 0.1, 0.2), split_seed: int = 0) -> tfds.core.DatasetBuilder:
  """Returns the builder for dataset ``name``, prepared from its raw source if needed.

  ``split_fractions`` (train, val, test) and ``split_seed`` draw the split of a dataset
  given by path that has none.
  """
  data_dir = paths.tfds_dir(tfds_dir)
  builder_cls, kwargs, raw, recipe, listed, base = _locate(name, manual_dir, split_fractions,
                                                           split_seed)
  key = paths.source_key(raw, recipe, listed, skip=data_dir) if raw.exists() else "missing"
  data_dir = data_dir / base / key
  builder = builder_cls(data_dir=str(data_dir), on_bad_file=on_bad_file, **kwargs)
  builder.source_key = key
  if prepare:
    source = raw.parent if by_path.is_csv(raw) else raw
    if not is_path(name) and not (source.is_dir() and any(source.iterdir())):
      # TFDS would fail on this with an AssertionError and a traceback.
      raise validate.MissingSource(
          f"config.data.name={name!r}: {source} does not exist or is empty (config.data."
          f"manual_dir, else $MEDJAX_DATA_DIR, names the folder holding {base}/). "
          + " ".join(builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(source)))
    skipped = builder.info.metadata.get("skipped", []) if builder.info.metadata else []
    if skipped and on_bad_file == "fail":
      # Prepared earlier with on_bad_file='skip': reusing it must not hide the bad files.
      lines = "\n".join(f"  {source / p}" for p in skipped)
      raise validate.BadDataError(
          f"{len(skipped)} bad file(s) in {source} were skipped when {data_dir} was prepared; "
          f"set config.data.on_bad_file='skip' to accept that, or fix them and remove the "
          f"prepared copy:\n{lines}")
  return builder


def _locate(name: str, manual_dir, split_fractions, split_seed):
  """``(builder class, its kwargs, raw source, recipe, listed files, base name)`` of ``name``."""
  if is_path(name):
    builder_cls, kwargs = by_path.ByPath, {"source": name, "split_fractions": tuple(split_fractions),
                                           "split_seed": split_seed}
    raw = Path(name).expanduser()
    if not raw.exists() or (raw.is_file() and not by_path.is_csv(raw)):
      what = "is a file but not a .csv" if raw.exists() else "does not exist"
      raise by_path.DatasetError(f"config.data.name={name!r}: {raw} {what}; give a "
                                 f"folder <split>/<class>/<image>, <class>/<image> or a CSV")
    recipe = f"by_path {by_path.ByPath.VERSION} {tuple(split_fractions)} {split_seed}"
    listed = by_path.listed_files(raw) if by_path.is_csv(raw) else None
    base = "by_path"
  else:
    base, _, config = name.partition("/")
    if base not in _BUILDERS:
      raise UnknownDataset(f"config.data.name={name!r} is neither a known dataset {names()} nor "
                           f"an existing folder or CSV; give a known name or the path itself")
    module, cls = _BUILDERS[base].split(":")
    builder_cls = getattr(importlib.import_module(module), cls)
    raw = paths.dataset_dir(base, manual_dir)
    kwargs = {}
    if config:
      known = [c.name for c in builder_cls.BUILDER_CONFIGS]
      if config not in known:
        raise UnknownDataset(f"config.data.name={name!r}: {base} has the configs {known}")
      kwargs["config"] = config
    if base in ("dicom_folder", "image_folder"):
      kwargs["root"] = str(raw)
    recipe = f"{module}:{cls} {builder_cls.VERSION} {config}"
    listed = None
  return builder_cls, kwargs, raw, recipe, listed, base


def source_key(name: str, *, manual_dir: str | None = None, tfds_dir: str | None = None,
               split_fractions=(0.7, 0.1, 0.2), split_seed: int = 0) -> str | None:
  """The key a prepared copy of ``name`` would have now; None where its source is absent."""
  if is_path(name) and not Path(name).expanduser().exists():
    return None
  _, _, raw, recipe, listed, _ = _locate(name, manual_dir, split_fractions, split_seed)
  if not raw.exists():
    return None
  return paths.source_key(raw, recipe, listed, skip=paths.tfds_dir(tfds_dir))
