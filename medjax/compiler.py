"""``jax.jit`` with the XLA:CPU options that medjax's convolutions need.

XLA:CPU (jaxlib 0.10) hands every convolution to YNNPACK by default, and YNNPACK runs
the papers' small-channel convolutions on one thread: IRMA's 3x3, 20 -> 20 layer at
128 x 128 (batch 64, 2 cores) took 130 ms forward and 566 ms for its kernel gradient,
AlexNet's 11 x 11 stride-4 conv1 (batch 64) 253 and 388 ms. With only matrix products
routed to YNNPACK, convolutions go to XLA's own Eigen kernels, which use every core:
72 / 146 ms and 67 / 97 ms, and on par for VGG's wide layers; matrix products are
unchanged (docs/performance.md, "Fifth round"). The option is per compilation, so it
touches no other JAX program in the process and no environment variable.
"""
import functools

import jax
# Whether JAX is tracing nothing now. jax.jit refuses compiler options on a call staged into
# an outer trace (another jit, eval_shape, a scan), and jax has no public test for that.
from jax._src.core import trace_state_clean as _at_top_level

# Library (YNNPACK) fusions XLA:CPU may form: matrix products only, no convolutions.
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.cache
def options() -> dict:
  """``CPU_OPTIONS`` on the CPU backend if this jaxlib knows them, else no options.

  An XLA without the option (older or newer than the one measured) rejects it at compile
  time ("No such compile option"); a one-off compilation of a scalar program finds out.
  Accelerators compile convolutions well with their defaults and get none.
  """
  if jax.default_backend() != "cpu":
    return {}
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(0.0).compile()
  except (TypeError, jax.errors.JaxRuntimeError):
    return {}
  return dict(CPU_OPTIONS)


def jit(fun, **jit_kwargs):
  """``jax.jit(fun, **jit_kwargs)`` compiled with :func:`options` when called at top level.

  Inside another trace (a jit, ``eval_shape``, a ``scan``) the call is staged into the outer
  program, which is compiled with the outer program's options, so the plain ``jax.jit``
  runs there. The options are resolved at the first top-level call, not here, so that
  importing a module that decorates with this starts no JAX backend (and device-count
  settings made after the import still apply).
  """
  plain = jax.jit(fun, **jit_kwargs)
  with_options = None

  @functools.wraps(fun)
  def call(*args, **kwargs):
    nonlocal with_options
    if not _at_top_level():
      return plain(*args, **kwargs)
    if with_options is None:
      with_options = jax.jit(fun, compiler_options=options() or None, **jit_kwargs)
    return with_options(*args, **kwargs)
  return call


def run_steps(step, carry, batches):
  """``step(carry, batch) -> (carry, out)`` on each of ``batches`` in turn; returns
  ``(carry, [out of each step])``.

  Under :func:`jit` this runs several steps in one compiled call, as Keras's
  ``steps_per_execution`` does (``config.steps_per_call`` and ``config.cae.steps_per_call``).
  On CPU that is a speed-up, not only fewer dispatches: XLA:CPU allocates a program's
  temporaries afresh at every execution and glibc serves blocks that large by ``mmap``, so
  every call faults its whole temporary buffer in page by page (LeNet: 2.4 GB, 724,000
  minor faults, 1-4 s of kernel time per call). Steps sharing a call share that buffer:
  at four per call the LeNet step falls from 2.9-5.8 s to 2.6-3.3 s, the CAE's from 4.65 to
  4.38 s (docs/performance.md, "Seventh round"). A Python loop, not ``lax.scan``: XLA:CPU
  ran the LeNet step ten times slower as a while-loop body. Each number of batches
  compiles once.
  """
  outs = []
  for batch in batches:
    carry, out = step(carry, batch)
    outs.append(out)
  return carry, outs
