"""Reads Keras HDF5 weight files (the ``*_weights_tf_dim_ordering_tf_kernels[_notop].h5``
layout of ``keras.applications`` and its ports) into ``{"<layer>/<weight>": array}``.

In that layout the root (or ``model_weights/`` in a whole-model ``.h5``) carries a
``layer_names`` attribute; each layer group carries ``weight_names`` giving, in order,
the dataset paths of its weights, e.g. ``conv1_3/kernel:0`` -- the ``_3`` is whatever
TF's graph-name uniquifier appended and ``:0`` the tensor index, so both are dropped and
the key becomes ``conv1/kernel``. Layer names may contain ``/`` (``fire2/squeeze1x1``),
which HDF5 turns into nested groups; keys keep the full layer name. Kernels are already
HWIO / (in, out), as Flax wants them.
"""
import os

import h5py
import numpy as np


def _names_attr(group: h5py.Group, name: str) -> list[str] | None:
  """Keras splits attributes larger than HDF5's 64 KiB limit into ``name0``, ``name1``..."""
  if name in group.attrs:
    values = list(group.attrs[name])
  elif f"{name}0" in group.attrs:
    values, i = [], 0
    while f"{name}{i}" in group.attrs:
      values.extend(group.attrs[f"{name}{i}"])
      i += 1
  else:
    return None
  return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _datasets(group: h5py.Group) -> list[str]:
  found = []
  group.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
  return found


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Returns ``{"<layer name>/<weight name>": array}`` (weight names without the
  uniquifying suffix and ``:0``), e.g. ``"block1_conv1/kernel"``, ``"fire2/squeeze1x1/bias"``.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Keras weights file not found: {path}")
  out: dict[str, np.ndarray] = {}
  with h5py.File(path, "r") as f:
    root = f["model_weights"] if "model_weights" in f else f
    layers = _names_attr(root, "layer_names")
    if layers is None:
      if "layers" in root and "vars" in "".join(_datasets(root["layers"])):
        raise ValueError(f"{path}: this is a Keras 3 '.weights.h5' file, which stores weights "
                         f"by index, not name; save with the legacy HDF5 format instead")
      layers = [k for k in root if isinstance(root[k], h5py.Group)]
    for layer in layers:
      if layer not in root:
        raise ValueError(f"{path}: layer {layer!r} is listed in layer_names but has no group")
      group = root[layer]
      weights = _names_attr(group, "weight_names")
      if weights is None:
        weights = _datasets(group)
      for weight in weights:
        short = weight.rsplit("/", 1)[-1].split(":", 1)[0]
        key = f"{layer}/{short}"
        if key in out:
          raise ValueError(f"{path}: layer {layer!r} has two weights named {short!r}")
        out[key] = np.asarray(group[weight][()])
  if not out:
    raise ValueError(f"{path}: no weights found (expected Keras HDF5 'layer_names' layout)")
  return out
