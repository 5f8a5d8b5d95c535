"""``jax.jit`` with the XLA:CPU options that medjax's convolutions need.

XLA:CPU hands every convolution to YNNPACK by default, and YNNPACK runs the papers'
small-channel convolutions on one thread. With only matrix products and reductions routed
to YNNPACK, convolutions go to XLA's own Eigen kernels, which use every core; matrix
products and reductions (batch statistics, means, losses) keep YNNPACK's kernels, which
are faster than XLA's own loops. Element-wise fusions stay with XLA: YNNPACK's are faster
for some programs and much slower for others (docs/performance.md). The options are per
compilation, so they touch no other JAX program in the process and no environment
variable.
"""
import functools

import jax


# Library (YNNPACK) fusions XLA:CPU may form: matrix products and reductions, no
# convolutions and no element-wise fusions.
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
# A program that runs once per run (parameter initialisation) is compiled with LLVM's -O1:
# its compile time is mostly LLVM optimising one unrolled threefry per parameter array,
# -O1 halves it, and the values are the same bits (tests/kernels/test_compiler.py).
ONCE_OPTIONS = {"xla_backend_optimization_level": 1}


@functools.cache
def options(once: bool = False) -> dict:
  """``CPU_OPTIONS`` (with ``ONCE_OPTIONS`` if ``once``) on the CPU backend if this jaxlib
  knows them, else no options.

  An XLA without the option rejects it at compile time ("No such compile option"); a
  one-off compilation of a scalar program finds out. Accelerators compile convolutions
  well with their defaults and get none.
  """
  if jax.default_backend() != "cpu":
    return {}
  wanted = {**CPU_OPTIONS, **(ONCE_OPTIONS if once else {})}
  try:
    jax.jit(lambda x: x + 1, compiler_options=wanted).lower(0.0).compile()
    return wanted
  except (TypeError, jax.errors.JaxRuntimeError):
    return options(False) if once else {}


def _nested_options_error(error: ValueError) -> bool:
  """Whether ``error`` is jax.jit refusing compiler options on a call inside another trace."""
  return "compiler_options" in str(error) and "top-level" in str(error)


def jit(fun, *, once: bool = False, **jit_kwargs):
  """``jax.jit(fun, **jit_kwargs)`` compiled with :func:`options` when called at top level;
  ``once=True`` for a program a run calls once (initialisation), see ``ONCE_OPTIONS``.

  Inside another trace (a jit, ``eval_shape``, ``grad``, a ``scan``) the call is staged into
  the outer program, which is compiled with the outer program's options, so the plain
  ``jax.jit`` runs there: with a traced argument it is known at once, else from jax.jit's
  own refusal (JAX has no public test for "inside a trace"). The options are resolved at
  the first top-level call, not here, so that importing a module that decorates with this
  starts no JAX backend (and device-count settings made after the import still apply).
  """
  plain = jax.jit(fun, **jit_kwargs)
  with_options = None

  @functools.wraps(fun)
  def call(*args, **kwargs):
    nonlocal with_options
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
      return plain(*args, **kwargs)
    if with_options is None:
      with_options = jax.jit(fun, compiler_options=options(once) or None,
                             **jit_kwargs)
    try:
      return with_options(*args, **kwargs)
    except ValueError as error:
      if not _nested_options_error(error):
        raise
      return plain(*args, **kwargs)
  return call


def run_steps(step, carry, batches):
  """``step(carry, batch) -> (carry, out)`` on each of ``batches`` in turn; returns
  ``(carry, [out of each step])``.

  Under :func:`jit` this runs several steps in one compiled call, as Keras's
  ``steps_per_execution`` does (``config.steps_per_call`` and ``config.cae.steps_per_call``).
  On CPU that is a speed-up, not only fewer dispatches: XLA:CPU allocates a program's
  temporaries afresh at every execution and glibc serves blocks that large by ``mmap``, so
  every call faults its whole temporary buffer in page by page; steps sharing a call share
  that buffer. A Python loop, not ``lax.scan``: XLA:CPU runs a large step much slower as a
  while-loop body. Each number of batches compiles once.
  """
  outs = []
  for batch in batches:
    carry, out = step(carry, batch)
    outs.append(out)
  return carry, outs
