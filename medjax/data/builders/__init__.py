"""TFDS builders, one module per dataset, chosen by ``config.data.name``."""
import hashlib
import importlib

import tensorflow_datasets as tfds

from medjax.data import paths

# config.data.name -> "module:Class"; the raw files live in <data_dir>/<name>/.
_BUILDERS = {
    "chest_xray": "medjax.data.builders.chest_xray:ChestXray",
    "image_folder": "medjax.data.builders.image_folder:ImageFolder",
}


def names() -> list[str]:
  return sorted(_BUILDERS)


def get_builder(name: str, *, manual_dir: str | None = None, tfds_dir: str | None = None,
                on_bad_file: str = "fail", prepare: bool = True) -> tfds.core.DatasetBuilder:
  """Returns the builder for dataset ``name``, prepared from its raw folder if needed."""
  if name not in _BUILDERS:
    raise KeyError(f"config.data.name={name!r} is not a known dataset; known: {names()}")
  module, cls = _BUILDERS[name].split(":")
  builder_cls = getattr(importlib.import_module(module), cls)
  raw = paths.dataset_dir(name, manual_dir)
  data_dir = paths.tfds_dir(tfds_dir)
  kwargs = {}
  if name == "image_folder":
    kwargs["root"] = str(raw)
    # One prepared copy per user folder.
    data_dir = data_dir / "image_folder" / hashlib.sha1(str(raw.resolve()).encode()).hexdigest()[:12]
  builder = builder_cls(data_dir=str(data_dir), on_bad_file=on_bad_file, **kwargs)
  if prepare:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
  return builder
