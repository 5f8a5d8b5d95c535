"""VLAD encoding (Jégou et al. 2010) of sets of local CNN descriptors, for system 5.

Every descriptor is hard-assigned to its nearest of the ``k`` k-means centres and the
residuals ``x - c_j`` are summed per centre, giving ``k * D`` numbers per image. Optional
normalisations, applied in this order:

1. power normalisation ``sign(v) * |v|**alpha`` (Jégou et al. 2012; ``alpha=0.5`` is the signed
   square root) damps bursty components;
2. intra-normalisation (Arandjelović & Zisserman 2013): each centre's residual sum is
   L2-normalised on its own, so no single visual word dominates;
3. global L2 normalisation of the whole vector (the only one paper 5 names, hence the only one
   on by default).

A zero block or vector (no descriptor assigned, or none at all) stays zero instead of becoming
NaN. Descriptor sets are padded to a common ``N`` and the padding excluded with ``mask``, so
one compiled function serves images of every size. The batch axis can be sharded over a
``Mesh``; the computation is independent per image.
"""
import functools

import jax
import jax.numpy as jnp

from medjax.features import kmeans
from medjax.features.lloyd import cluster_sums
from medjax.features.norm import l2_normalize


@functools.partial(jax.jit, static_argnames=("power_alpha", "intra_norm", "l2_norm"))
def vlad(descriptors: jax.Array, centers: jax.Array, mask: jax.Array | None = None, *,
         power_alpha: float | None = None, intra_norm: bool = False,
         l2_norm: bool = True) -> jax.Array:
  """Encodes ``descriptors`` ``(B, N, D)`` against ``centers`` ``(k, D)`` into ``(B, k * D)``.

  ``mask`` ``(B, N)`` is True for real descriptors. The output is laid out centre-major:
  entries ``[j * D:(j + 1) * D]`` belong to centre ``j``.
  """
  b, n, d = descriptors.shape
  k = centers.shape[0]
  flat = descriptors.reshape(b * n, d)
  labels, _ = kmeans.assign(centers, flat)
  # Per image and centre: one scatter-add over the b * k (image, centre) slots.
  slots = jnp.arange(b, dtype=jnp.int32)[:, None] * k + labels.reshape(b, n)
  sums, counts = cluster_sums(flat, slots.reshape(b * n), b * k,
                                     None if mask is None else mask.reshape(b * n))
  v = sums.reshape(b, k, d) - counts.reshape(b, k, 1).astype(descriptors.dtype) * centers[None]
  if power_alpha is not None:
    v = jnp.sign(v) * jnp.abs(v) ** power_alpha
  if intra_norm:
    v = l2_normalize(v, axis=-1)
  v = v.reshape(b, k * d)
  if l2_norm:
    v = l2_normalize(v, axis=-1)
  return v
