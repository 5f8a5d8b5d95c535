"""Name -> model class, so configs choose a network by string.

Entries are ``"module:Class"`` paths imported lazily: importing the registry does not
import every family (and their optional dependencies).
"""
import dataclasses
import importlib

from medjax import kernels

_MODELS = {
    # Supervised systems trained from scratch (systems 1, 2, 4).
    "lenet_ova": "medjax.models.lenet:LeNetOneVsAll",
    "lenet": "medjax.models.lenet:LeNet",
    "alexnet_anatomy": "medjax.models.alexnet_anatomy:ModifiedAlexNet",
    "irma_cnn": "medjax.models.irma_cnn:IrmaCNN",
    # ImageNet-pretrained backbones (weights: medjax.weights.load.load_backbone).
    "efficientnet_lite0": "medjax.models.efficientnet_lite:EfficientNetLite0",
    "alexnet": "medjax.models.alexnet:AlexNet",
    "alexnet_torchvision": "medjax.models.alexnet:AlexNetTorchvision",
    "vgg19": "medjax.models.vgg:VGG19",
    "googlenet": "medjax.models.googlenet:GoogLeNet",
    "squeezenet1_1": "medjax.models.squeezenet:SqueezeNet11",
}


def register(name: str, path: str) -> None:
  """Adds ``name -> "module:Class"``; users register their own families the same way."""
  if name in _MODELS and _MODELS[name] != path:
    raise ValueError(f"model name {name!r} is already registered as {_MODELS[name]!r}")
  _MODELS[name] = path


def names() -> list[str]:
  return sorted(_MODELS)


def get_model_class(name: str):
  try:
    path = _MODELS[name]
  except KeyError:
    raise KeyError(f"config.model.name={name!r} is not a known model; known: {names()}") from None
  module, cls = path.split(":")
  return getattr(importlib.import_module(module), cls)


def get_model(name: str, **kwargs):
  """Instantiates the registered model ``name`` with its config kwargs.

  A model with a ``kernels`` attribute gets ``kwargs["kernels"]`` (default ``"auto"``)
  resolved here by :func:`medjax.kernels.resolve`, so that the ops a model runs are fixed
  when it is built, for the backend it is built on.
  """
  cls = get_model_class(name)
  if "kernels" in {field.name for field in dataclasses.fields(cls)}:
    kwargs["kernels"] = kernels.resolve(kwargs.get("kernels", kernels.AUTO))
  return cls(**kwargs)
