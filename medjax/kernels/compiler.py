"""``jax.jit`` with the XLA:CPU options that medjax's convolutions need.

XLA:CPU hands every convolution to YNNPACK by default, and YNNPACK runs the papers'
small-channel convolutions on one thread. With only matrix products and reductions routed
to YNNPACK, convolutions go to XLA's own Eigen kernels, which use every core; matrix
products and reductions (batch statistics, means, losses) keep YNNPACK's kernels, which
are faster than XLA's own loops. Element-wise fusions stay with XLA: YNNPACK's are faster
for some programs and much slower for others (docs/performance.md). A program whose time is
in wide float32 matrix products (the CAE's) sends them to oneDNN on CPUs with AVX-512,
whose kernels run such products faster there; the CNNs' smaller and batched products run
slower in oneDNN, so no other program does. oneDNN takes only products of one dtype, so
bfloat16 products with a float32 result stay with YNNPACK's bfloat16 kernels. The options
are per compilation, so they touch no other JAX program in the process and no environment
variable.
"""
import functools

import jax

from medjax.kernels import isa

# Library (YNNPACK) fusions XLA:CPU may form: matrix products and reductions, no
# convolutions and no element-wise fusions.
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
# Added for wide-product programs on CPUs with AVX-512: oneDNN fusions of single matrix
# products, which XLA:CPU forms before YNNPACK's (a product oneDNN cannot take is left to
# YNNPACK).
ONEDNN_DOT_OPTIONS = {"xla_cpu_use_onednn": True,
                      "xla_cpu_experimental_onednn_fusion_type":
                      "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
# A program that runs once per run (parameter initialisation) is compiled with LLVM's -O1:
# its compile time is mostly LLVM optimising one unrolled threefry per parameter array,
# -O1 halves it, and the values are the same bits (tests/kernels/test_compiler.py).
ONCE_OPTIONS = {"xla_backend_optimization_level": 1}


def cpu_options(wide_products: bool = False, cpu_flags: frozenset[str] | None = None) -> dict:
  """The options for a program on a CPU with ``cpu_flags`` (default: this host's):
  ``CPU_OPTIONS``, plus ``ONEDNN_DOT_OPTIONS`` for ``wide_products`` with AVX-512."""
  if wide_products and isa.vector_floats(cpu_flags) >= 16:
    return {**CPU_OPTIONS, **ONEDNN_DOT_OPTIONS}
  return dict(CPU_OPTIONS)


@functools.cache
def options(once: bool = False, wide_products: bool = False) -> dict:
  """:func:`cpu_options` (with ``ONCE_OPTIONS`` if ``once``) on the CPU backend if this
  jaxlib knows them, else no options.

  An XLA without the option rejects it at compile time ("No such compile option"); a
  one-off compilation of a scalar program finds out. Accelerators compile convolutions
  well with their defaults and get none.
  """
  if jax.default_backend() != "cpu":
    return {}
  candidates = [cpu_options(wide_products)]
  if candidates[0] != CPU_OPTIONS:  # oneDNN's may be the unknown ones.
    candidates.append(CPU_OPTIONS)
  for base in candidates:
    wanted = {**base, **(ONCE_OPTIONS if once else {})}
    try:
      jax.jit(lambda x: x + 1, compiler_options=wanted).lower(0.0).compile()
      return wanted
    except (TypeError, jax.errors.JaxRuntimeError):
      continue
  return options(False, wide_products) if once else {}


def _nested_options_error(error: ValueError) -> bool:
  """Whether ``error`` is jax.jit refusing compiler options on a call inside another trace."""
  return "compiler_options" in str(error) and "top-level" in str(error)


def jit(fun, *, once: bool = False, wide_products: bool = False, **jit_kwargs):
  """``jax.jit(fun, **jit_kwargs)`` compiled with :func:`options` when called at top level;
  ``once=True`` for a program a run calls once (initialisation), see ``ONCE_OPTIONS``;
  ``wide_products=True`` for a program whose time is in wide float32 matrix products.

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
      with_options = jax.jit(fun, compiler_options=options(once, wide_products) or None,
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
