"""Convolutions on oneDNN's kernels, through an XLA FFI custom call built on first use.

XLA:CPU (jaxlib 0.10) runs convolutions on Eigen and has no bfloat16 convolution at all;
oneDNN's JIT kernels, which PyTorch uses, take the vector units the CPU has (AVX2,
AVX-512, AVX512-BF16, AMX) and were measured 1.2-2x faster in float32 and 1.3-5x in bfloat16
on medjax's small-kernel layers (docs/performance.md). ``onednn_conv.cc`` binds oneDNN's
forward, input-gradient and kernel-gradient primitives (the forward one also with a bias
and ReLU, the kernel gradient with the bias's) as FFI handlers; this module
compiles it once per source, jaxlib and oneDNN (``g++`` against the ``onednn-cpu-gomp``
wheel's library and the ``onednn-devel-cpu-gomp`` wheel's headers), caches the library
under ``$MEDJAX_CACHE_DIR`` (default ``~/.cache/medjax``), registers the handlers and gives
:func:`conv` its JAX gradient. Where any of that is missing, :func:`available` is False,
says why once, and :mod:`medjax.kernels.convolution` keeps its XLA forms: the values are
the same function up to float32 round-off either way. ``MEDJAX_ONEDNN=0`` turns it off.
"""
import contextlib
import contextvars
import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

SOURCE = Path(__file__).with_name("onednn_conv.cc")
TARGETS = {"forward": "MedjaxConvForward", "input_grad": "MedjaxConvInputGrad",
           "kernel_grad": "MedjaxConvKernelGrad", "forward_bias": "MedjaxConvForwardBias",
           "kernel_bias_grad": "MedjaxConvKernelBiasGrad",
           "batched_matmul": "MedjaxBatchedMatmul"}
_PREFIX = "medjax_onednn_conv_"
DTYPES = (jnp.float32, jnp.bfloat16)  # What the handlers take; float64 stays with XLA.
_DISABLED = contextvars.ContextVar("medjax_onednn_disabled", default=False)
# oneDNN's dnnl_cpu_isa_avx512_core_bf16 bits, which its AMX and FP16 levels include.
AVX512_CORE_BF16 = 0xE7


def _package_file(distribution: str, name: str) -> Path | None:
  """The installed file ``name`` (a path suffix) of a pip ``distribution``, if any."""
  try:
    files = importlib.metadata.files(distribution) or []
  except importlib.metadata.PackageNotFoundError:
    return None
  for file in files:
    if str(file).endswith("/" + name):
      return Path(file.locate()).resolve()
  return None


def _cache_dir() -> Path:
  root = os.environ.get("MEDJAX_CACHE_DIR") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "medjax")
  return Path(root) / "onednn"


def _build() -> Path:
  """The compiled handler library, built into the cache unless already there; raises
  ``RuntimeError`` naming what is missing."""
  if os.environ.get("MEDJAX_ONEDNN", "1") == "0":
    raise RuntimeError("MEDJAX_ONEDNN=0")
  if platform.system() != "Linux" or platform.machine() != "x86_64":
    raise RuntimeError(f"built for Linux x86_64 only, not {platform.system()} "
                       f"{platform.machine()}")
  library = _package_file("onednn-cpu-gomp", "libdnnl.so")
  header = _package_file("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.hpp")
  if library is None or header is None:
    raise RuntimeError("the onednn-cpu-gomp and onednn-devel-cpu-gomp wheels are not "
                       "installed (requirements.lock has them)")
  compiler = shutil.which(os.environ.get("CXX", "g++"))
  if compiler is None:
    raise RuntimeError("no C++ compiler (g++ or $CXX) to build the custom call")
  include = header.parents[2]
  key = hashlib.sha256(b"\0".join([
      SOURCE.read_bytes(), jax.ffi.include_dir().encode(), str(library).encode(),
      importlib.metadata.version("jaxlib").encode(), compiler.encode()])).hexdigest()[:16]
  target = _cache_dir() / f"libmedjax_onednn_{key}.so"
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
    built = Path(scratch) / target.name
    command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
               f"-I{jax.ffi.include_dir()}", f"-I{include}", str(SOURCE),
               f"-L{library.parent}", "-ldnnl", f"-Wl,-rpath,{library.parent}",
               "-o", str(built)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
      raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
    os.replace(built, target)  # Atomic: concurrent processes each rename a whole file.
  return target


@functools.cache
def _load() -> tuple[bool, str, int]:
  """Builds, loads and registers the handlers once per process: ``(ok, why not, oneDNN's
  dnnl_cpu_isa_t here)``."""
  try:
    library = ctypes.CDLL(str(_build()))
    for kind, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(_PREFIX + kind, jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform="cpu")
    cpu_isa = int(library.MedjaxOnednnCpuIsa())
  except (RuntimeError, OSError, AttributeError) as error:
    logging.getLogger(__name__).warning(
        "medjax: oneDNN convolutions unavailable (%s); XLA's are used instead", error)
    return False, str(error), 0
  return True, "", cpu_isa


def available() -> bool:
  """Whether :func:`conv` can run here; the first call builds the custom call."""
  return _load()[0]


@contextlib.contextmanager
def disabled():
  """Programs traced inside use XLA's forms: for programs that leave this process (a
  SavedModel cannot carry a custom call)."""
  token = _DISABLED.set(True)
  try:
    yield
  finally:
    _DISABLED.reset(token)


def usable() -> bool:
  """Whether a convolution traced now may take oneDNN's route: built, not :func:`disabled`,
  and a one-CPU-device program (the custom call has no sharding rule, so a sharded program
  would gather the batch onto every device)."""
  return (not _DISABLED.get() and jax.default_backend() == "cpu" and jax.device_count() == 1
          and available())


def bfloat16_kernels() -> bool:
  """Whether oneDNN has bfloat16 kernels on this CPU (AVX512-BF16 or AMX; oneDNN's
  ``ONEDNN_MAX_CPU_ISA`` limit applies). With AVX2 only it has no bfloat16 convolution at
  all, and with AVX-512 alone it emulates one, slower than its float32 one
  (docs/performance.md): there bfloat16 convolutions keep XLA's forms."""
  ok, _, cpu_isa = _load()
  return ok and cpu_isa & AVX512_CORE_BF16 == AVX512_CORE_BF16


def unavailable_reason() -> str:
  """Why :func:`available` is False ("" when it is True), for provenance and tests."""
  return _load()[1]


def state() -> str:
  """For provenance, without building anything: "loaded", "unavailable: <why>", or "not
  loaded" when nothing in this process has asked for oneDNN's convolutions yet."""
  if _load.cache_info().currsize == 0:
    return "not loaded"
  ok, why, _ = _load()
  if not ok:
    return f"unavailable: {why}"
  return "loaded" + ("" if bfloat16_kernels() else " (no bfloat16 kernels on this CPU)")


def _attributes(strides, pads, groups):
  (top, bottom), (left, right) = pads
  return dict(stride_h=int(strides[0]), stride_w=int(strides[1]), pad_top=int(top),
              pad_bottom=int(bottom), pad_left=int(left), pad_right=int(right),
              groups=int(groups))


def output_shape(x_shape, kernel_shape, strides, pads):
  """NHWC shape of the convolution of ``x_shape`` by HWIO ``kernel_shape``."""
  (kh, kw, _, out), (sh, sw) = kernel_shape, strides
  height = (x_shape[1] + sum(pads[0]) - kh) // sh + 1
  width = (x_shape[2] + sum(pads[1]) - kw) // sw + 1
  return (x_shape[0], height, width, out)


# Under vmap with one operand batched, the members fold into one axis of one convolution:
# per call and batched operand, (the operand's axis they join, the result's axis they
# leave from). forward (x, kernel) -> y: images, or the kernel's outputs; input_grad
# (dy, kernel) -> dx: images, or the kernel's inputs; kernel_grad (x, dy) -> dkernel: x's
# channels (the kernel's inputs), or dy's (its outputs). Grouped convolutions fold images
# only: members joined to a channel axis would straddle the groups.
_FOLDS = {"forward": ((0, 0), (3, 3)), "input_grad": ((0, 0), (2, 3)),
          "kernel_grad": ((3, 2), (3, 3))}


def _primitive(kind, strides, pads, groups, window):
  """One custom call as a JAX function of its two operands. ``window`` is what the
  operands do not say: x's spatial size for input_grad, the kernel's for kernel_grad.
  Batched (``nn.vmap`` stacks LeNet's four networks) by folding the members into one
  convolution where one operand is batched and :data:`_FOLDS` allows, else one
  convolution per member."""

  @jax.custom_batching.custom_vmap
  def call(a, b):
    if kind == "forward":
      shape, dtype = output_shape(a.shape, b.shape, strides, pads), a.dtype
    elif kind == "input_grad":
      shape, dtype = (a.shape[0], *window, b.shape[2] * groups), a.dtype
    else:
      shape, dtype = (*window, a.shape[3] // groups, b.shape[3]), jnp.float32
    return jax.ffi.ffi_call(_PREFIX + kind, jax.ShapeDtypeStruct(shape, dtype))(
        a, b, **_attributes(strides, pads, groups))

  @call.def_vmap
  def rule(axis_size, in_batched, a, b):
    which = 0 if in_batched[0] else 1
    fold_axis, out_axis = _FOLDS[kind][which]
    if all(in_batched) or (groups != 1 and fold_axis != 0):
      a, b = (v if batched else jnp.broadcast_to(v, (axis_size, *v.shape))
              for v, batched in zip((a, b), in_batched))
      return jax.lax.map(lambda pair: call(*pair), (a, b)), True
    member = jnp.moveaxis((a, b)[which], 0, fold_axis)
    member = member.reshape(*member.shape[:fold_axis], -1, *member.shape[fold_axis + 2:])
    out = call(member, b) if which == 0 else call(a, member)
    out = out.reshape(*out.shape[:out_axis], axis_size, -1, *out.shape[out_axis + 1:])
    return jnp.moveaxis(out, out_axis, 0), True

  return call


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def conv(x: jax.Array, kernel: jax.Array, strides, pads, groups: int = 1, xla_form=None,
         xla_grads: tuple[str, ...] = ()) -> jax.Array:
  """NHWC/HWIO convolution, ``pads`` explicit ``((top, bottom), (left, right))``, the kernel
  ``(kh, kw, C / groups, O)`` as ``lax``'s ``feature_group_count`` takes it.

  The gradients named in ``xla_grads`` ("input_grad", "kernel_grad") are instead those of
  ``xla_form``, the same convolution as a function of ``(x, kernel)`` in XLA's ops, for
  the passes where oneDNN's kernel was measured slower (depthwise: docs/performance.md).

  Computes in ``x``'s dtype (float32 or bfloat16) with float32 accumulation; the output
  and the input gradient have ``x``'s dtype, the kernel gradient is accumulated and
  returned in float32 before it is cast to the kernel's dtype.
  """
  return _primitive("forward", strides, pads, groups, None)(x, kernel.astype(x.dtype))


def _conv_fwd(x, kernel, strides, pads, groups, xla_form, xla_grads):
  return conv(x, kernel, strides, pads, groups, xla_form, xla_grads), (x, kernel)


def _conv_bwd(strides, pads, groups, xla_form, xla_grads, residuals, g):
  x, kernel = residuals
  g = g.astype(x.dtype)
  if xla_grads:  # XLA drops the form's unused value and gradient.
    xla_dx, xla_dkernel = jax.vjp(xla_form, x, kernel)[1](g)
  if "input_grad" in xla_grads:
    dx = xla_dx
  else:
    dx = _primitive("input_grad", strides, pads, groups, x.shape[1:3])(
        g, kernel.astype(x.dtype))
  if "kernel_grad" in xla_grads:
    return dx, xla_dkernel
  dkernel = _primitive("kernel_grad", strides, pads, groups, kernel.shape[:2])(x, g)
  return dx, dkernel.astype(kernel.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def conv_bias(x: jax.Array, kernel: jax.Array, bias: jax.Array, strides, pads,
              groups: int = 1, relu: bool = False) -> jax.Array:
  """:func:`conv` plus ``bias`` over the output channels, then ReLU where ``relu``, in one
  oneDNN call: the bias and the ReLU are applied as the output is written instead of by
  two more passes over it (docs/performance.md). The bias is added in float32 before the
  output is rounded to ``x``'s dtype.

  The gradient masks the output gradient where the output is 0 (``jax.nn.relu``'s: none at
  0) and takes the kernel's and the bias's gradients from one oneDNN call, both summed in
  float32. Under ``vmap`` the members run one after another.
  """
  shape = output_shape(x.shape, kernel.shape, strides, pads)
  return jax.ffi.ffi_call(_PREFIX + "forward_bias", jax.ShapeDtypeStruct(shape, x.dtype),
                          vmap_method="sequential")(
      x, kernel.astype(x.dtype), bias.astype(jnp.float32),
      **_attributes(strides, pads, groups), relu=int(relu))


def _conv_bias_fwd(x, kernel, bias, strides, pads, groups, relu):
  y = conv_bias(x, kernel, bias, strides, pads, groups, relu)
  return y, (x, kernel, bias, y if relu else None)


def _conv_bias_bwd(strides, pads, groups, relu, residuals, g):
  x, kernel, bias, y = residuals
  g = g.astype(x.dtype)
  if relu:
    g = jnp.where(y > 0, g, jnp.zeros((), g.dtype))
  dx = _primitive("input_grad", strides, pads, groups, x.shape[1:3])(g, kernel.astype(x.dtype))
  dkernel, dbias = jax.ffi.ffi_call(
      _PREFIX + "kernel_bias_grad",
      (jax.ShapeDtypeStruct(kernel.shape, jnp.float32),
       jax.ShapeDtypeStruct(bias.shape, jnp.float32)),
      vmap_method="sequential")(x, g, **_attributes(strides, pads, groups))
  return dx, dkernel.astype(kernel.dtype), dbias.astype(bias.dtype)


conv_bias.defvjp(_conv_bias_fwd, _conv_bias_bwd)


def batched_matmul(a: jax.Array, b: jax.Array, transpose_a: bool = False,
                   transpose_b: bool = False) -> jax.Array:
  """``a[i] @ b[i]`` over the leading axis (``a[i]^T`` with ``transpose_a``, ``b[i]^T`` with
  ``transpose_b``, read in place), in float32, from float32 or bfloat16 operands:
  Winograd's per-tile-position products (:mod:`medjax.kernels.winograd`, whose custom VJP
  gives the gradients) and bfloat16 dense layers (:mod:`medjax.kernels.matmul`), as fast
  as XLA:CPU's dots or faster at their shapes (docs/performance.md)."""
  rows = a.shape[2] if transpose_a else a.shape[1]
  columns = b.shape[1] if transpose_b else b.shape[2]
  return jax.ffi.ffi_call(_PREFIX + "batched_matmul",
                          jax.ShapeDtypeStruct((a.shape[0], rows, columns), jnp.float32),
                          vmap_method="sequential")(a, b.astype(a.dtype),
                                                    transpose_a=int(transpose_a),
                                                    transpose_b=int(transpose_b))
