"""TFDS builders, one module per dataset, chosen by ``config.data.name``.

``config.data.name`` is a key of ``_BUILDERS``, optionally followed by ``/<config>`` for
builders with several TFDS builder configs (``"irma/anatomy9"``); without it a builder's
first config is used.
"""
import hashlib
import importlib

import tensorflow_datasets as tfds

from medjax.data import paths, validate

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
# Builders of the user's own folder: they take its path as ``root`` and get one prepared
# copy per folder.
_USER_FOLDERS = ("dicom_folder", "image_folder")


def names() -> list[str]:
  return sorted(_BUILDERS)


def get_builder(name: str, *, manual_dir: str | None = None, tfds_dir: str | None = None,
                on_bad_file: str = "fail", prepare: bool = True) -> tfds.core.DatasetBuilder:
  """Returns the builder for dataset ``name``, prepared from its raw folder if needed."""
  base, _, config = name.partition("/")
  if base not in _BUILDERS:
    raise KeyError(f"config.data.name={name!r} is not a known dataset; known: {names()}")
  module, cls = _BUILDERS[base].split(":")
  builder_cls = getattr(importlib.import_module(module), cls)
  raw = paths.dataset_dir(base, manual_dir)
  data_dir = paths.tfds_dir(tfds_dir)
  kwargs = {}
  if config:
    known = [c.name for c in builder_cls.BUILDER_CONFIGS]
    if config not in known:
      raise KeyError(f"config.data.name={name!r}: {base} has the configs {known}")
    kwargs["config"] = config
  if base in _USER_FOLDERS:
    kwargs["root"] = str(raw)
    data_dir = data_dir / base / hashlib.sha1(str(raw.resolve()).encode()).hexdigest()[:12]
  builder = builder_cls(data_dir=str(data_dir), on_bad_file=on_bad_file, **kwargs)
  if prepare:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
    skipped = builder.info.metadata.get("skipped", []) if builder.info.metadata else []
    if skipped and on_bad_file == "fail":
      # Prepared earlier with on_bad_file='skip': reusing it must not hide the bad files.
      lines = "\n".join(f"  {raw / p}" for p in skipped)
      raise validate.BadDataError(
          f"{len(skipped)} bad file(s) in {raw} were skipped when {data_dir} was prepared; "
          f"set config.data.on_bad_file='skip' to accept that, or fix them and remove the "
          f"prepared copy:\n{lines}")
  return builder
