"""Name maps from PyTorch / Keras weight files to medjax's Flax variable trees.

A family's map is a list of :class:`Rule`: one per source layer, naming the Flax module
it fills and the layer *kind*, which fixes the per-tensor renaming and layout change
(torch conv ``OIHW`` -> Flax ``HWIO``, torch Linear ``(out, in)`` -> ``(in, out)``, torch
BatchNorm ``running_mean``/``running_var`` -> the ``batch_stats`` collection, Keras
``gamma``/``beta``/``moving_*`` likewise). :func:`convert` is driven by the model's own
variable template, so every Flax leaf must be filled, every source tensor consumed, and
every shape checked before anything is transposed: a wrong file fails loudly with the
layer, the expected and the found shape, and the missing / unexpected names.
"""
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


class WeightImportError(ValueError):
  """The weight file does not fit the model (names or shapes)."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """One source layer -> one Flax module.

  ``chw`` is for a torch/Caffe Linear fed by flattening an NCHW map of that (C, H, W):
  medjax flattens NHWC, so the input rows are permuted from C,H,W to H,W,C order.
  ``top`` marks the classifier: when the model is built without it (``include_top=False``)
  its source tensors are dropped instead of reported as unexpected.
  """
  source: str
  target: tuple[str, ...]
  kind: str
  chw: tuple[int, int, int] | None = None
  top: bool = False


def _oihw_to_hwio(w, rule):
  del rule
  return np.transpose(w, (2, 3, 1, 0))


def _hwio_to_oihw_shape(shape):
  return (shape[3], shape[2], shape[0], shape[1])


def _linear_to_flax(w, rule):
  if rule.chw is None:
    return np.transpose(w)
  c, h, wd = rule.chw
  out = w.shape[0]
  return w.reshape(out, c, h, wd).transpose(2, 3, 1, 0).reshape(h * wd * c, out)


def _transpose_shape(shape):
  return (shape[1], shape[0])


def _same(w, rule):
  del rule
  return w


def _same_shape(shape):
  return tuple(shape)


# kind -> (separator between layer and tensor name,
#          {(collection, flax leaf): (source tensor name, transform, target shape -> source shape)},
#          source tensor names read but not needed by Flax)
_Tensors = dict[tuple[str, str], tuple[str, Callable, Callable]]
_KINDS: dict[str, tuple[str, _Tensors, tuple[str, ...]]] = {
    "torch_conv": (".", {
        ("params", "kernel"): ("weight", _oihw_to_hwio, _hwio_to_oihw_shape),
        ("params", "bias"): ("bias", _same, _same_shape)}, ()),
    "torch_linear": (".", {
        ("params", "kernel"): ("weight", _linear_to_flax, _transpose_shape),
        ("params", "bias"): ("bias", _same, _same_shape)}, ()),
    "torch_bn": (".", {
        ("params", "scale"): ("weight", _same, _same_shape),
        ("params", "bias"): ("bias", _same, _same_shape),
        ("batch_stats", "mean"): ("running_mean", _same, _same_shape),
        ("batch_stats", "var"): ("running_var", _same, _same_shape)},
                 ("num_batches_tracked",)),
    "keras_conv": ("/", {
        ("params", "kernel"): ("kernel", _same, _same_shape),
        ("params", "bias"): ("bias", _same, _same_shape)}, ()),
    "keras_dense": ("/", {
        ("params", "kernel"): ("kernel", _same, _same_shape),
        ("params", "bias"): ("bias", _same, _same_shape)}, ()),
    "keras_bn": ("/", {
        ("params", "scale"): ("gamma", _same, _same_shape),
        ("params", "bias"): ("beta", _same, _same_shape),
        ("batch_stats", "mean"): ("moving_mean", _same, _same_shape),
        ("batch_stats", "var"): ("moving_variance", _same, _same_shape)}, ()),
}


def _subtree(template: Mapping, collection: str, path: Sequence[str]) -> Mapping | None:
  node = template.get(collection)
  for name in path:
    if not isinstance(node, Mapping) or name not in node:
      return None
    node = node[name]
  return node


def _leaves(tree: Mapping, prefix=()) -> list[tuple[tuple[str, ...], Any]]:
  out = []
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.extend(_leaves(v, prefix + (k,)))
    else:
      out.append((prefix + (k,), v))
  return out


def _set(tree: dict, path: Sequence[str], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def convert(source: Mapping[str, np.ndarray], rules: Sequence[Rule], template: Mapping, *,
            source_name: str = "weights", ignore: Sequence[str] = ()) -> dict:
  """Builds Flax variables shaped like ``template`` from a flat ``source`` dict.

  ``template`` is the model's variables (arrays or ``jax.ShapeDtypeStruct``, e.g. from
  ``jax.eval_shape(model.init, ...)``). ``ignore`` lists source-name prefixes the model
  deliberately has no counterpart for (e.g. GoogLeNet's training-only auxiliary heads).
  Raises :class:`WeightImportError` listing every shape mismatch, missing and unexpected
  name at once.
  """
  used: set[str] = set()
  filled: set[tuple[str, ...]] = set()
  out: dict = {}
  missing, mismatched = [], []
  for rule in rules:
    sep, tensors, extra = _KINDS[rule.kind]
    if all(_subtree(template, col, rule.target) is None for col in ("params", "batch_stats")):
      if rule.top:
        used.update(k for k in source if k.startswith(rule.source + sep))
        continue
      missing.append(f"{'/'.join(rule.target)} (the model has no such module for "
                     f"{source_name} layer {rule.source!r})")
      continue
    for (col, leaf), (name, transform, source_shape) in tensors.items():
      sub = _subtree(template, col, rule.target)
      if sub is None or leaf not in sub:
        continue
      key = f"{rule.source}{sep}{name}"
      expected = tuple(sub[leaf].shape)
      if key not in source:
        missing.append(f"{key} (for {col}/{'/'.join(rule.target)}/{leaf}, shape "
                       f"{source_shape(expected)})")
        continue
      used.add(key)
      value = np.asarray(source[key])
      want = source_shape(expected)
      if tuple(value.shape) != want:
        mismatched.append(f"layer {rule.source!r} tensor {key!r}: expected shape {want}, "
                          f"found {tuple(value.shape)} (Flax {col}/{'/'.join(rule.target)}/"
                          f"{leaf} {expected})")
        continue
      _set(out, (col,) + rule.target + (leaf,),
           np.ascontiguousarray(transform(value, rule), dtype=sub[leaf].dtype))
      filled.add((col,) + rule.target + (leaf,))
    used.update(f"{rule.source}{sep}{name}" for name in extra
                if f"{rule.source}{sep}{name}" in source)
  for col in ("params", "batch_stats"):
    for path, _ in _leaves(template.get(col, {})):
      if (col,) + path not in filled and not any(
          tuple(r.target) == path[:len(r.target)] for r in rules):
        missing.append(f"{col}/{'/'.join(path)} (no rule maps a {source_name} tensor to it)")
  unexpected = sorted(k for k in source if k not in used and not k.startswith(tuple(ignore)))
  if mismatched or missing or unexpected:
    lines = [f"{source_name} does not fit the model:"]
    lines += [f"  shape mismatch: {m}" for m in mismatched]
    lines += [f"  missing: {m}" for m in missing]
    lines += [f"  unexpected: {u} {tuple(np.shape(source[u]))}" for u in unexpected]
    raise WeightImportError("\n".join(lines))
  return out


# ---------------------------------------------------------------------------- families


def efficientnet_lite0_torch() -> list[Rule]:
  """lukemelas ``EfficientNet`` names, as in ``efficientnet-lite0-57934424.pth``."""
  rules = [Rule("_conv_stem", ("stem_conv",), "torch_conv"),
           Rule("_bn0", ("stem_bn",), "torch_bn")]
  for i in range(16):
    b = f"_blocks.{i}"
    if i > 0:  # block 0 has expand ratio 1: no expand conv in the model nor in the file.
      rules += [Rule(f"{b}._expand_conv", (f"block{i}", "expand_conv"), "torch_conv"),
                Rule(f"{b}._bn0", (f"block{i}", "expand_bn"), "torch_bn")]
    rules += [Rule(f"{b}._depthwise_conv", (f"block{i}", "depthwise_conv"), "torch_conv"),
              Rule(f"{b}._bn1", (f"block{i}", "depthwise_bn"), "torch_bn"),
              Rule(f"{b}._project_conv", (f"block{i}", "project_conv"), "torch_conv"),
              Rule(f"{b}._bn2", (f"block{i}", "project_bn"), "torch_bn")]
  rules += [Rule("_conv_head", ("head_conv",), "torch_conv"),
            Rule("_bn1", ("head_bn",), "torch_bn"),
            Rule("_fc", ("fc",), "torch_linear", top=True)]
  return rules


def alexnet_torchvision_torch() -> list[Rule]:
  """torchvision ``alexnet`` state dict (``features.N`` / ``classifier.N``)."""
  convs = {0: "conv1", 3: "conv2", 6: "conv3", 8: "conv4", 10: "conv5"}
  return ([Rule(f"features.{i}", (name,), "torch_conv") for i, name in convs.items()] +
          [Rule("classifier.1", ("fc6",), "torch_linear", chw=(256, 6, 6), top=True),
           Rule("classifier.4", ("fc7",), "torch_linear", top=True),
           Rule("classifier.6", ("fc8",), "torch_linear", top=True)])


def alexnet_caffe_torch() -> list[Rule]:
  """Caffe ``bvlc_alexnet`` blobs saved as a torch state dict under the Caffe layer names
  (``conv1.weight`` ... ``fc8.bias``; Caffe blobs are already OIHW / (out, in), and
  grouped convs hold ``in / 2`` input channels as Flax's grouped kernels do)."""
  return ([Rule(f"conv{i}", (f"conv{i}",), "torch_conv") for i in range(1, 6)] +
          [Rule("fc6", ("fc6",), "torch_linear", chw=(256, 6, 6), top=True),
           Rule("fc7", ("fc7",), "torch_linear", top=True),
           Rule("fc8", ("fc8",), "torch_linear", top=True)])


_VGG19_CONVS = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
                for c in range(1, n + 1)]


def vgg19_torch() -> list[Rule]:
  """torchvision ``vgg19`` state dict: convs are ``features.N`` at the sequential index
  (ReLUs and pools take the other indices), the classifier ``classifier.0/3/6``."""
  rules, index = [], 0
  for name in _VGG19_CONVS:
    rules.append(Rule(f"features.{index}", (name,), "torch_conv"))
    index += 2 + (name in ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4"))
  return rules + [Rule("classifier.0", ("fc1",), "torch_linear", chw=(512, 7, 7), top=True),
                  Rule("classifier.3", ("fc2",), "torch_linear", top=True),
                  Rule("classifier.6", ("predictions",), "torch_linear", top=True)]


def vgg19_keras() -> list[Rule]:
  """``keras.applications.VGG19`` layer names (Keras flattens NHWC, as medjax does)."""
  return ([Rule(name, (name,), "keras_conv") for name in _VGG19_CONVS] +
          [Rule(name, (name,), "keras_dense", top=True) for name in ("fc1", "fc2", "predictions")])


def googlenet_torch() -> list[Rule]:
  """torchvision ``googlenet`` state dict; ``aux1.*``/``aux2.*`` are ignored by the caller."""
  def basic(source, target):
    return [Rule(f"{source}.conv", target + ("conv",), "torch_conv"),
            Rule(f"{source}.bn", target + ("bn",), "torch_bn")]
  rules = basic("conv1", ("conv1",)) + basic("conv2", ("conv2",)) + basic("conv3", ("conv3",))
  for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
    name = f"inception{block}"
    for branch in ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1"):
      rules += basic(f"{name}.{branch}", (name, branch.replace(".", "_")))
  return rules + [Rule("fc", ("fc",), "torch_linear", top=True)]


GOOGLENET_TORCH_IGNORE = ("aux1.", "aux2.")


def squeezenet1_1_keras() -> list[Rule]:
  """rcmalli/keras-squeezenet layer names (``conv1``, ``fire2/squeeze1x1``, ...)."""
  rules = [Rule("conv1", ("conv1",), "keras_conv")]
  for fire in range(2, 10):
    rules += [Rule(f"fire{fire}/{conv}", (f"fire{fire}", conv), "keras_conv")
              for conv in ("squeeze1x1", "expand1x1", "expand3x3")]
  return rules + [Rule("conv10", ("conv10",), "keras_conv", top=True)]


# (registry model name, source format) -> (rules, source-name prefixes to ignore).
RULES: dict[tuple[str, str], tuple[Callable[[], list[Rule]], tuple[str, ...]]] = {
    ("efficientnet_lite0", "torch"): (efficientnet_lite0_torch, ()),
    ("alexnet", "torch"): (alexnet_caffe_torch, ()),
    ("alexnet_torchvision", "torch"): (alexnet_torchvision_torch, ()),
    ("vgg19", "torch"): (vgg19_torch, ()),
    ("vgg19", "keras"): (vgg19_keras, ()),
    ("googlenet", "torch"): (googlenet_torch, GOOGLENET_TORCH_IGNORE),
    ("squeezenet1_1", "keras"): (squeezenet1_1_keras, ()),
}


def to_flax(name: str, fmt: str, source: Mapping[str, np.ndarray], template: Mapping, *,
            source_name: str = "weights") -> dict:
  """Converts a ``fmt`` (``"torch"`` or ``"keras"``) weight dict for model ``name``."""
  if (name, fmt) not in RULES:
    known = sorted(f"{n} ({f})" for n, f in RULES)
    raise WeightImportError(f"no {fmt} weight map for model {name!r}; known: {known}")
  rules, ignore = RULES[(name, fmt)]
  return convert(source, rules(), template, source_name=source_name, ignore=ignore)
