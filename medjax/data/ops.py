"""Named preprocessing ops, composed by configs as strings: ``"decode(1)|pad_to_square|resize(256)"``.

Each op is a function of its arguments returning ``fn(example, seed) -> example`` on
tf.data dictionaries; ``seed`` is a stateless-RNG seed (shape [2]) derived per example from
the run's seed and the example's position in the stream, so augmentation is reproducible
and resumes identically. Images are float32 in [0, 1] after ``decode`` (16-bit PNGs are
scaled by their bit depth), until a normalisation op maps them to the model's range.

Ops needing data from the training split (``subtract_mean``) receive it through the
``context`` mapping given to :func:`compose`.
"""
import ast
import re

import numpy as np
import tensorflow as tf

from medjax.data import clahe as clahe_graph
from medjax.data import tf_runtime

_OPS = {}
_RANDOM = set()  # Ops that use their seed; everything before the first one is cacheable.


def traced(fn):
  """``fn`` for ``tf.data`` to trace as written, without AutoGraph's source rewriting: every
  op here is graph ops already (``tf.cond`` where a branch depends on a tensor), and the
  rewriting of each mapped function and its callees cost seconds at every run's start."""
  return tf.autograph.experimental.do_not_convert(fn)


def register(name, random: bool = False):
  def wrap(fn):
    _OPS[name] = fn
    if random:
      _RANDOM.add(name)
    return fn
  return wrap


def split_deterministic_prefix(pp: str) -> tuple[str, str]:
  """``pp`` -> ``(prefix, rest)``: the ops before the first random one, and the others.

  The prefix gives the same output every epoch, so the pipeline caches its result.
  """
  specs = [s.strip() for s in pp.split("|") if s.strip()]
  cut = next((i for i, spec in enumerate(specs) if parse(spec)[0] in _RANDOM), len(specs))
  return "|".join(specs[:cut]), "|".join(specs[cut:])


def split_at_context(pp: str) -> tuple[str, str]:
  """``pp`` -> ``(before, rest)``: the ops before the first one that needs the training
  statistics (``subtract_mean``), and that op with those after it."""
  specs = [s.strip() for s in pp.split("|") if s.strip()]
  cut = next((i for i, spec in enumerate(specs)
              if getattr(_OPS[parse(spec)[0]], "needs_context", False)), len(specs))
  return "|".join(specs[:cut]), "|".join(specs[cut:])


def names() -> list[str]:
  return sorted(_OPS)


_SPEC = re.compile(r"^\s*([a-z_0-9]+)\s*(?:\((.*)\))?\s*$", re.S)


def parse(spec: str):
  """``"resize(256, method='area')"`` -> ``("resize", (256,), {"method": "area"})``."""
  m = _SPEC.match(spec)
  if not m:
    raise ValueError(f"preprocessing op {spec!r} is not of the form name or name(args)")
  name, args = m.group(1), m.group(2)
  if name not in _OPS:
    raise ValueError(f"preprocessing op {name!r} (in {spec!r}) is unknown; known: {names()}")
  try:
    call = ast.parse(f"f({args or ''})", mode="eval").body
    pos = tuple(ast.literal_eval(a) for a in call.args)
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
  except (ValueError, SyntaxError) as e:
    raise ValueError(f"preprocessing op {spec!r}: arguments must be literals ({e})") from None
  return name, pos, kw


def compose(pp: str, context: dict | None = None, graph_only: bool = False):
  """Builds ``fn(example, seed)`` applying the ``|``-separated ops of ``pp`` in order.

  ``graph_only`` takes each op's ``graph_form`` where it has one (an op that runs Python,
  such as ``clahe``, rewritten in graph ops with the same output), so that the function
  can be saved in a SavedModel.
  """
  tf_runtime.run_graphs_as_written()
  fns = []
  for spec in filter(None, (s.strip() for s in pp.split("|"))):
    name, pos, kw = parse(spec)
    op = _OPS[name]
    if graph_only:
      op = getattr(op, "graph_form", op)
    if getattr(op, "needs_context", False):
      kw = {**kw, "context": context or {}}
    fns.append(op(*pos, **kw))

  def apply(example, seed):
    seeds = tf.random.experimental.stateless_split(seed, num=max(len(fns), 1))
    for i, fn in enumerate(fns):
      example = fn(example, seeds[i])
    return example
  return traced(apply)


def _image_op(fn):
  """Lifts ``fn(image, seed) -> image`` to an op on the example's ``image``."""
  def op(example, seed):
    return {**example, "image": fn(example["image"], seed)}
  return op


@register("decode")
def decode(channels: int = 3):
  """Encoded bytes -> float32 [0, 1], ``channels`` 1 (gray), 3 (RGB) or 0 (as stored).

  PNG/JPEG/BMP/GIF; 16-bit PNGs scale by 65535, 8-bit by 255; palette images expand to
  their colours; RGBA drops alpha when RGB is asked for; RGB -> gray uses ITU-R 601 luma.
  """
  def fn(data, seed):
    del seed
    image = tf.io.decode_image(data, channels=channels, dtype=tf.float32,
                               expand_animations=False)
    if channels == 0:
      image = tf.cond(tf.shape(image)[-1] == 4, lambda: image[..., :3], lambda: image)
    return image
  return _image_op(fn)


@register("pad_to_square")
def pad_to_square(value: float = 0.0):
  """Centres the image on a square canvas of its longer side, filled with ``value`` (black)."""
  def fn(image, seed):
    del seed
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.maximum(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return tf.pad(image - value, [[top, side - h - top], [left, side - w - left], [0, 0]]) + value
  return _image_op(fn)


@register("resize")
def resize(size, method: str = "bilinear", antialias: bool = True):
  """Resizes to ``size`` (int: square; or (height, width)), aspect ratio not kept."""
  hw = (size, size) if isinstance(size, int) else tuple(size)
  def fn(image, seed):
    del seed
    return tf.image.resize(image, hw, method=method, antialias=antialias)
  return _image_op(fn)


@register("resize_pack")
def resize_pack(sizes, method: str = "bilinear", antialias: bool = True):
  """Resizes to each square size of ``sizes`` and lays the results side by side, top
  aligned and zero padded below, on one ``(max(sizes), sum(sizes))`` canvas: one
  fixed-size tensor that carries an image at several scales (multi-scale frozen-feature
  runs), each exactly as ``resize(size)`` makes it."""
  sizes = tuple(int(s) for s in sizes)
  def fn(image, seed):
    del seed
    tall = max(sizes)
    return tf.concat([tf.pad(tf.image.resize(image, (s, s), method=method, antialias=antialias),
                             [[0, tall - s], [0, 0], [0, 0]]) for s in sizes], axis=1)
  return _image_op(fn)


@register("resize_short")
def resize_short(size: int, method: str = "bilinear", antialias: bool = True):
  """Resizes so that the shorter side is ``size``, keeping the aspect ratio."""
  def fn(image, seed):
    del seed
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    scale = size / tf.minimum(h, w)
    new = tf.cast(tf.round(tf.stack([h * scale, w * scale])), tf.int32)
    return tf.image.resize(image, new, method=method, antialias=antialias)
  return _image_op(fn)


@register("take_channel")
def take_channel(channel: int = 0):
  """Keeps one channel (system 1 keeps 'red' of its R=G=B X-rays)."""
  def fn(image, seed):
    del seed
    return image[..., channel:channel + 1]
  return _image_op(fn)


@register("gray_to_rgb")
def gray_to_rgb():
  """Replicates a single channel to three, for ImageNet backbones."""
  def fn(image, seed):
    del seed
    return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else tf.tile(
        image[..., :1], [1, 1, 3])
  return _image_op(fn)


@register("clahe")
def clahe(clip_limit: float = 0.01, kernel_size=None, nbins: int = 256):
  """Contrast-limited adaptive histogram equalisation (scikit-image's, step for step).

  Per channel on [0, 1] images; ``kernel_size`` None means 1/8 of each side as in
  scikit-image. Images of a size known when the pipeline is built (after a ``resize``) go
  through :mod:`medjax.data.clahe`'s graph ops compiled by XLA, others through
  scikit-image itself.
  """
  from skimage import exposure

  def np_clahe(image):
    # One 2-D call per channel: given (H, W, 1), scikit-image equalises a 3-D volume
    # (the same values at more cost).
    image = np.clip(image, 0.0, 1.0)
    return np.stack([exposure.equalize_adapthist(image[..., c], kernel_size=kernel_size,
                                                 clip_limit=clip_limit, nbins=nbins)
                     for c in range(image.shape[-1])], axis=-1).astype(np.float32)

  compiled = clahe_graph.compiled(clip_limit, kernel_size, nbins)

  def fn(image, seed):
    del seed
    if image.shape[0] is not None and image.shape[1] is not None:
      # A static size (a resize came first): the same function in graph ops, compiled,
      # which tf.data runs without holding the GIL.
      return compiled(image)
    out = tf.numpy_function(np_clahe, [image], tf.float32, stateful=False)
    return tf.ensure_shape(out, image.shape)
  return _image_op(fn)


def _clahe_graph(clip_limit: float = 0.01, kernel_size=None, nbins: int = 256):
  """``clahe`` in graph ops only, for SavedModels (it refuses images of unknown size)."""
  def fn(image, seed):
    del seed
    return clahe_graph.equalize_channels(image, clip_limit, kernel_size, nbins)
  return _image_op(fn)


clahe.graph_form = _clahe_graph


@register("subtract_mean")
def subtract_mean(context=None):
  """Subtracts the training split's mean image (computed and stored by the pipeline)."""
  if not context or "mean_image" not in context:
    raise ValueError("preprocessing op 'subtract_mean' needs the training mean image; it is "
                     "computed by the input pipeline when the op appears in config.pp_train")
  mean = tf.constant(context["mean_image"], tf.float32)
  def fn(image, seed):
    del seed
    return image - mean
  return _image_op(fn)
subtract_mean.needs_context = True


@register("random_rot90", random=True)
def random_rot90():
  """Rotates by 0, 90, 180 or 270 degrees, uniformly (system 4's rotation augmentation)."""
  def fn(image, seed):
    k = tf.random.stateless_uniform([], seed, 0, 4, dtype=tf.int32)
    return tf.image.rot90(image, k)
  return _image_op(fn)


@register("random_crop", random=True)
def random_crop(size, pad: int = 0):
  """A random ``size`` crop (int: square), optionally after zero-padding by ``pad``."""
  hw = (size, size) if isinstance(size, int) else tuple(size)
  def fn(image, seed):
    if pad:
      image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(image, (*hw, tf.shape(image)[-1]), seed)
  return _image_op(fn)


@register("central_crop")
def central_crop(size):
  hw = (size, size) if isinstance(size, int) else tuple(size)
  def fn(image, seed):
    del seed
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (h - hw[0]) // 2, (w - hw[1]) // 2
    return image[top:top + hw[0], left:left + hw[1]]
  return _image_op(fn)


# The one table of input normalisations, shared by the tf.data path (``normalize``) and
# host-side numpy preparation (``medjax.classify``): each maps a [0, 1] RGB image
# (tf tensor or numpy array, channels last) to a network's input. Backbone specs name
# their entry (``BackboneSpec.normalisation``), so extraction pp strings are built from it.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

NORMALISATIONS = {
    # torchvision's ImageNet mean/std.
    "torchvision": lambda x: (x - _IMAGENET_MEAN) / _IMAGENET_STD,
    # Keras/Caffe ports: BGR, 0..255, per-channel mean subtracted.
    "caffe": lambda x: x[..., ::-1] * 255.0 - _CAFFE_BGR_MEAN,
    # EfficientNet-Lite: (x * 255 - 127) / 128.
    "efficientnet_lite": lambda x: (x * 255.0 - 127.0) / 128.0,
    "minus_one_one": lambda x: x * 2.0 - 1.0,
    "unit": lambda x: x,
}


@register("normalize")
def normalize(kind: str = "torchvision"):
  """Maps [0, 1] images to a network's input range; ``kind`` is a key of ``NORMALISATIONS``."""
  if kind not in NORMALISATIONS:
    raise ValueError(f"normalize({kind!r}): expected one of {sorted(NORMALISATIONS)}")
  def fn(image, seed):
    del seed
    return tf.cast(NORMALISATIONS[kind](image), tf.float32)
  return _image_op(fn)


# -- augmentations for radiographs (transfer learning, configs/finetune.py) ----------------
@register("random_resized_crop", random=True)
def random_resized_crop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18)):
  """A crop of random area fraction ``scale`` and aspect ``ratio`` (log-uniform), resized to
  ``size``: Inception-style, with the area bounded so that the lungs stay in view."""
  hw = (size, size) if isinstance(size, int) else tuple(size)
  def fn(image, seed):
    s1, s2, s3 = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    area = tf.random.stateless_uniform([], s1, scale[0], scale[1]) * h * w
    log_r = tf.random.stateless_uniform([], s2, np.log(ratio[0]), np.log(ratio[1]))
    r = tf.exp(log_r)
    ch = tf.minimum(tf.sqrt(area / r), h)
    cw = tf.minimum(tf.sqrt(area * r), w)
    offset = tf.random.stateless_uniform([2], s3, 0.0, 1.0) * tf.stack([h - ch, w - cw])
    box = tf.stack([offset[0] / h, offset[1] / w, (offset[0] + ch) / h, (offset[1] + cw) / w])
    return tf.image.crop_and_resize(image[None], box[None], [0], hw)[0]
  return _image_op(fn)


@register("random_affine", random=True)
def random_affine(degrees: float = 7.0, translate: float = 0.05, fill: float = 0.0):
  """Rotation by up to ``degrees`` about the centre and a shift by up to ``translate`` of
  each side, bilinear, filled with ``fill``: the patient's pose varies by this much."""
  def fn(image, seed):
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    angle = tf.random.stateless_uniform([], s1, -degrees, degrees) * np.pi / 180
    shift = tf.random.stateless_uniform([2], s2, -translate, translate) * tf.stack([w, h])
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2).
    a2 = cx - cos * cx + sin * cy - shift[0]
    b2 = cy - sin * cx - cos * cy - shift[1]
    transform = tf.stack([cos, -sin, a2, sin, cos, b2, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=fill, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.ensure_shape(out[0], image.shape)
  return _image_op(fn)


@register("random_brightness_contrast", random=True)
def random_brightness_contrast(brightness: float = 0.1, contrast: float = 0.1):
  """Adds up to ``brightness`` and scales contrast about the mean by up to 1 +- ``contrast``
  (exposure varies between radiographs), on [0, 1] images, clipped."""
  def fn(image, seed):
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    delta = tf.random.stateless_uniform([], s1, -brightness, brightness)
    factor = tf.random.stateless_uniform([], s2, 1 - contrast, 1 + contrast)
    mean = tf.reduce_mean(image)
    return tf.clip_by_value((image - mean) * factor + mean + delta, 0.0, 1.0)
  return _image_op(fn)


@register("random_flip", random=True)
def random_flip():
  """Left-right flip with probability 1/2 (off in radiograph recipes: laterality matters)."""
  def fn(image, seed):
    return tf.image.stateless_random_flip_left_right(image, seed)
  return _image_op(fn)
