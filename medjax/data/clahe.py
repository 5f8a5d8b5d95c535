"""CLAHE in TensorFlow graph ops: scikit-image's ``equalize_adapthist``, step for step.

scikit-image through ``tf.numpy_function`` holds the GIL and cannot be saved in a
SavedModel; :func:`equalize_adapthist` computes the same thing with graph ops only, so
``medjax.export`` can ship runs whose preprocessing equalises (every IRMA CNN run), and the
``clahe`` op runs it, compiled by XLA, on images whose size is fixed. It follows
scikit-image 0.26's integer steps exactly (14-bit rescale, reflect padding, per-tile
histograms, its clipping and excess redistribution, the mapping) and its float32
accumulation of the bilinear interpolation, so outputs agree to float32 round-off
(``tests/data/test_clahe.py`` bounds the difference on real and random images).
"""
import functools

import numpy as np
import tensorflow as tf

NR_OF_GRAY = 2 ** 14  # scikit-image's working range.


def equalize_channels(image: tf.Tensor, clip_limit: float = 0.01, kernel_size=None,
                      nbins: int = 256) -> tf.Tensor:
  """``(H, W, C)`` -> each channel clipped to [0, 1] and equalised by
  :func:`equalize_adapthist`."""
  image = tf.clip_by_value(image, 0.0, 1.0)
  return tf.stack([equalize_adapthist(image[..., c], kernel_size, clip_limit, nbins)
                   for c in range(image.shape[-1])], axis=-1)


def compiled(clip_limit: float, kernel_size, nbins: int):
  """:func:`equalize_channels` compiled by XLA, one program per image shape: its ~100 small
  TensorFlow ops per image otherwise cost more in dispatch than in arithmetic. One function
  per setting, so every pipeline built in a process reuses its compilations."""
  return _compiled(clip_limit, tuple(kernel_size) if isinstance(kernel_size, list)
                   else kernel_size, nbins)


@functools.cache
def _compiled(clip_limit, kernel_size, nbins):
  return tf.function(lambda image: equalize_channels(image, clip_limit, kernel_size, nbins),
                     jit_compile=True)


def equalize_adapthist(image: tf.Tensor, kernel_size=None, clip_limit: float = 0.01,
                       nbins: int = 256) -> tf.Tensor:
  """``(H, W)`` float32 in [0, 1] with a static shape -> equalised float32 ``(H, W)``."""
  h, w = image.shape
  if h is None or w is None:
    raise ValueError("clahe in a TensorFlow graph needs a fixed image size: put a resize "
                     "before it in the preprocessing")
  if kernel_size is None:
    kernel = (max(h // 8, 1), max(w // 8, 1))
  elif np.isscalar(kernel_size):
    kernel = (int(kernel_size),) * 2
  else:
    kernel = tuple(int(k) for k in kernel_size)
  # img_as_uint: float32 products, rounded half to even.
  u = tf.clip_by_value(tf.math.round(image * np.float32(65535)), 0.0, 65535.0)
  grey = _rescale(tf.cast(u, tf.float64), 0.0, float(NR_OF_GRAY - 1))
  grey = tf.cast(tf.math.round(grey), tf.int32)
  out = _clahe(grey, kernel, clip_limit, nbins)
  return _rescale(tf.cast(out, tf.float32), 0.0, 1.0)


def _rescale(x: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
  """``skimage.exposure.rescale_intensity(x, out_range=(lo, hi))`` in ``x``'s dtype."""
  xmin, xmax = tf.reduce_min(x), tf.reduce_max(x)
  span = tf.where(xmax > xmin, xmax - xmin, tf.ones_like(xmax))
  scaled = (x - xmin) / span * tf.constant(hi - lo, x.dtype) + tf.constant(lo, x.dtype)
  return tf.where(xmax > xmin, scaled, tf.clip_by_value(x, lo, hi))


def _tiles(x: tf.Tensor, rows: int, cols: int, kh: int, kw: int) -> tf.Tensor:
  """``(rows * kh, cols * kw)`` -> ``(rows * cols, kh * kw)``, tiles in row-major order."""
  x = tf.transpose(tf.reshape(x, [rows, kh, cols, kw]), [0, 2, 1, 3])
  return tf.reshape(x, [rows * cols, kh * kw])


def _clahe(image: tf.Tensor, kernel, clip_limit: float, nbins: int) -> tf.Tensor:
  (h, w), (kh, kw) = image.shape, kernel
  pad_start = [kh // 2, kw // 2]
  pad_end = [(k - s % k) % k + int(np.ceil(k / 2.0)) for k, s in zip(kernel, (h, w))]
  image = tf.pad(image, [[pad_start[0], pad_end[0]], [pad_start[1], pad_end[1]]], "REFLECT")
  bin_size = 1 + NR_OF_GRAY // nbins
  image = image // bin_size
  hp, wp = h + pad_start[0] + pad_end[0], w + pad_start[1] + pad_end[1]
  rows, cols = hp // kh, wp // kw
  blocks = image[kh // 2:kh // 2 + (rows - 1) * kh, kw // 2:kw // 2 + (cols - 1) * kw]
  blocks = _tiles(blocks, rows - 1, cols - 1, kh, kw)
  elements = kh * kw
  clim = int(np.clip(clip_limit * elements, 1, None)) if clip_limit > 0.0 else elements
  # Bin indices are below nbins by construction; a constant size keeps the op compilable
  # by XLA once per shape (tf.math.bincount derives its size from the data).
  hist = tf.raw_ops.DenseBincount(input=blocks, size=nbins, weights=tf.zeros([0], tf.int32))
  hist = _clip_histogram(hist, clim, nbins)
  # map_histogram: cumulative counts scaled to the grey range, truncated to integers.
  mapped = tf.cast(_running_sum(hist), tf.float64) * ((NR_OF_GRAY - 1) / elements)
  mapped = tf.cast(tf.minimum(mapped, NR_OF_GRAY - 1.0), tf.int32)
  maps = tf.reshape(mapped, [rows - 1, cols - 1, nbins])
  maps = tf.pad(maps, [[1, 1], [1, 1], [0, 0]], "SYMMETRIC")  # np.pad 'edge' by one.
  pixels = _tiles(image, rows, cols, kh, kw)
  col_frac = np.tile(np.arange(kw) / kw, kh)           # scikit-image's coeffs[0]
  row_frac = np.repeat(np.arange(kh) / kh, kw)          # and coeffs[1], float64.
  # The four neighbouring tiles' maps side by side: one gather of four values per pixel.
  edges = tf.stack([tf.reshape(maps[e0:e0 + rows, e1:e1 + cols], [rows * cols, nbins])
                    for e0, e1 in ((0, 0), (0, 1), (1, 0), (1, 1))], axis=-1)
  values = tf.cast(tf.gather(edges, pixels, batch_dims=1), tf.float64)
  weights = np.stack([(1 - col_frac) * (1 - row_frac), col_frac * (1 - row_frac),
                      (1 - col_frac) * row_frac, col_frac * row_frac], axis=-1)
  terms = tf.cast(values * weights, tf.float32)
  # Summed in scikit-image's order, in float32: a running sum, which graph optimisers
  # keep in order (a chain of adds may be rewritten into one AddN of another order).
  result = tf.cumsum(terms, axis=-1)[..., -1]
  result = tf.cast(result, tf.int32)  # astype(uint16): truncation.
  result = tf.reshape(tf.transpose(tf.reshape(result, [rows, cols, kh, kw]), [0, 2, 1, 3]),
                      [hp, wp])
  return result[pad_start[0]:hp - pad_end[0], pad_start[1]:wp - pad_end[1]]


def _running_sum(counts: tf.Tensor) -> tf.Tensor:
  """Integer cumulative sum over the last axis in log2(n) shifted adds: XLA lowers
  ``tf.cumsum`` to a window reduction of quadratic cost in the bin count."""
  n, shift = counts.shape[-1], 1
  while shift < n:
    counts = counts + tf.pad(counts[..., :n - shift], [[0, 0]] * (counts.shape.rank - 1)
                             + [[shift, 0]])
    shift *= 2
  return counts


def _clip_histogram(hist: tf.Tensor, clim: int, nbins: int) -> tf.Tensor:
  """scikit-image's ``clip_histogram`` for every tile (row) at once."""
  clim = tf.constant(clim, tf.int32)
  over = hist > clim
  n_excess = tf.reduce_sum(tf.where(over, hist - clim, tf.zeros_like(hist)), axis=1)
  hist = tf.minimum(hist, clim)
  bin_incr = n_excess // nbins
  upper = clim - bin_incr
  low = hist < upper[:, None]
  n_excess -= tf.reduce_sum(tf.cast(low, tf.int32), axis=1) * bin_incr
  hist = tf.where(low, hist + bin_incr[:, None], hist)
  mid = (hist >= upper[:, None]) & (hist < clim)
  n_excess += tf.reduce_sum(tf.where(mid, hist - clim, tf.zeros_like(hist)), axis=1)
  hist = tf.where(mid, tf.fill(tf.shape(hist), clim), hist)
  positions = tf.range(nbins, dtype=tf.int32)[None, :]

  def sweep(hist, n_excess):
    """One pass of scikit-image's ``for index in range(hist.size)`` loop, per tile."""
    def body(index, hist, n_excess):
      going = n_excess > 0
      under = hist < clim
      step = tf.maximum(tf.reduce_sum(tf.cast(under, tf.int32), axis=1)
                        // tf.maximum(n_excess, 1), 1)
      hit = (under & (positions >= index) & ((positions - index) % step[:, None] == 0)
             & going[:, None])
      hist = hist + tf.cast(hit, tf.int32)
      return index + 1, hist, n_excess - tf.reduce_sum(tf.cast(hit, tf.int32), axis=1)
    _, hist, n_excess = tf.while_loop(
        lambda index, hist, n_excess: (index < nbins) & tf.reduce_any(n_excess > 0), body,
        (tf.constant(0, tf.int32), hist, n_excess))
    return hist, n_excess

  def outer(hist, n_excess, alive):
    previous = n_excess
    hist, n_excess = sweep(hist, tf.where(alive, n_excess, tf.zeros_like(n_excess)))
    n_excess = tf.where(alive, n_excess, previous)
    return hist, n_excess, alive & (n_excess > 0) & (n_excess != previous)

  hist, _, _ = tf.while_loop(lambda hist, n_excess, alive: tf.reduce_any(alive), outer,
                             (hist, n_excess, n_excess > 0))
  return hist
