"""A fully connected layer whose products take :mod:`matmul`'s fast forms.

``nn.Dense`` in bfloat16 asks XLA:CPU for a bfloat16 result, which it computes at its
float32 rate after converting both operands, and its kernel gradient contracts the
inputs over their first axis (the other slow form); through :func:`matmul.matmul` all
three products run on the bfloat16 kernels, accumulated in float32. In float32 the two
are the same function.
"""
import flax.linen as nn
import jax.numpy as jnp

from medjax.kernels import choice
from medjax.kernels import matmul as mm
from medjax.kernels.convolution import add_bias


class Dense(nn.Module):
  """``nn.Dense`` over the last axis, routed through :func:`matmul.matmul` for the fast
  ``kernels``; ``"reference"`` is ``nn.Dense``'s own product.

  Parameters are named, shaped and initialised as ``nn.Dense``'s (``kernel`` ``(in, out)``,
  ``bias``), and the compute dtype is theirs too (the promotion of input, kernel and
  bias), so checkpoints and weight importers do not depend on which layer ran.
  """
  features: int
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  kernels: str = choice.XLA_CPU

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    dtype = jnp.result_type(*(v for v in (x, kernel, bias) if v is not None))
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if not choice.fast(self.kernels):
      y = jnp.dot(x, kernel)
      return y if bias is None else y + bias.astype(dtype)
    y = mm.matmul(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], self.features)
    return y if bias is None else add_bias(y, bias)
