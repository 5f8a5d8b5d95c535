"""Checks of XLA:CPU's and glibc's behaviour that medjax's CPU choices rest on.

  python -m benchmarks.xla_cpu_checks [--out=FILE.json]

These are facts about the installed jaxlib and C library, not about medjax, so they are
measured here and not asserted in the test suite (a newer jaxlib that changes them must
not fail the tests; it should make us revisit the choice). Each record names the fact,
what was observed and whether the premise still ``holds``:

- ``compiler_options/convolutions_leave_ynnpack``: with ``medjax.kernels``' compile options a
  convolution compiles to no YNNPACK fusion, while a matrix product still does.
- ``bfloat16/ops_round_trip_per_read``: XLA:CPU runs a bfloat16 op (here a pad) in
  float32 and rounds back, and a fusion that reads the result several times repeats the
  round trip per read, so a loop over a padded bfloat16 input runs slower than over float32.
  medjax therefore widens bfloat16 inputs before padding them for the depthwise
  convolution, its kernel gradient and max pooling.
- ``host_memory/plain_faults_every_run``: without ``medjax.host_memory``'s policy each run
  of a program with a 144 MB temporary page-faults it in anew (the cost the policy removes).
- ``host_memory/retained_runs_fault_nothing``: with the policy, later runs reuse the block.
"""
import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

from absl import flags

from medjax import cli

import jax  # noqa: I001 -- after cli, as in every command.
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from medjax.kernels import compiler, windows

FLAGS = flags.FLAGS

# A product whose 6000 x 6000 float32 intermediate (144 MB) is an XLA temporary: far above
# glibc's mmap threshold, so without the policy each run maps and faults it in anew.
_FAULTS_PROGRAM = textwrap.dedent("""
    import json, resource, sys
    from medjax import host_memory
    applied = host_memory.retain_freed_blocks() if sys.argv[1] == "retain" else None
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: jnp.tanh(x @ x.T) @ x)
    x = jnp.ones((6000, 64))
    faults = []
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"applied": applied, "faults": faults}))
    """)
_TEMP_PAGES = 6000 * 6000 * 4 // 4096


def fusions(fn, *args) -> dict[str, int]:
  """How many YNNPACK fusions ``fn`` compiles to, under medjax's options."""
  options = compiler.options() or None
  hlo = jax.jit(fn, compiler_options=options).lower(*args).compile().as_text()
  return {"ynn": hlo.count('"kind":"__ynn_fusion"')}


def compiler_option_checks() -> list[dict]:
  if jax.default_backend() != "cpu" or not compiler.options():
    return [{"name": "compiler_options/convolutions_leave_ynnpack", "holds": None,
             "observed": f"not applicable: backend {jax.default_backend()}, "
                         f"options {compiler.options()}"}]
  x, w = jnp.ones((2, 16, 16, 20)), jnp.ones((3, 3, 20, 20))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  conv_fusions = fusions(conv, x, w)["ynn"]
  matmul_fusions = fusions(jnp.dot, jnp.ones((64, 64)), jnp.ones((64, 64)))["ynn"]
  return [{"name": "compiler_options/convolutions_leave_ynnpack",
           "holds": conv_fusions == 0 and matmul_fusions >= 1,
           "observed": {"conv_ynn_fusions": conv_fusions, "matmul_ynn_fusions": matmul_fusions}}]


def bfloat16_loop_check() -> dict:
  """The depthwise kernel gradient's loop as it was before medjax widened first: a bfloat16
  input padded in its own dtype, then per image nine shifted views times the gradient,
  converted and summed in float32, against the same program on float32 inputs. XLA:CPU
  pads bfloat16 in float32 and rounds back, and repeats that round trip in the loop's
  fusion for every view that reads it. The two forms are timed alternately, as every
  benchmark case is."""
  name = "bfloat16/ops_round_trip_per_read"
  if jax.default_backend() != "cpu":
    return {"name": name, "holds": None, "observed": f"not applicable: {jax.default_backend()}"}

  def taps(x, g):
    views = [x[:, i:i + g.shape[1], j:j + g.shape[2]] for i in range(3) for j in range(3)]
    products = [v.astype(jnp.float32) * g.astype(jnp.float32) for v in views]
    return jnp.stack(jax.lax.reduce(products, [jnp.float32(0)] * 9,
                                    lambda a, b: [p + q for p, q in zip(a, b)], (0, 1, 2)))

  def kernel_grad(x, g):
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return windows.sum_over_batch_chunks(taps, jnp.zeros((9, g.shape[-1])), x, g, 1)
  x = np.random.default_rng(0).normal(size=(16, 56, 56, 144))
  f = jax.jit(kernel_grad, compiler_options=compiler.options() or None)
  calls = {dtype: functools.partial(f, jnp.asarray(x, dtype), jnp.asarray(x, dtype))
           for dtype in (jnp.bfloat16, jnp.float32)}
  record = timing.compare(name, calls[jnp.bfloat16], "float32", calls[jnp.float32], repeats=7)
  seconds = {"bfloat16": round(record["medjax_seconds"], 5),
             "float32": round(record["peer_seconds"], 5)}
  return {"name": name, "holds": seconds["bfloat16"] > 1.3 * seconds["float32"],
          "observed": {"median_seconds": seconds}}


def _faults(mode: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _FAULTS_PROGRAM, mode], check=True,
                       capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu",
                            "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
  return json.loads(out.stdout.strip().splitlines()[-1])


def host_memory_checks() -> list[dict]:
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return [{"name": "host_memory/retained_runs_fault_nothing", "holds": None,
             "observed": "not applicable: the policy is glibc's mallopt"}]
  plain, retained = _faults("plain"), _faults("retain")
  return [
      {"name": "host_memory/plain_faults_every_run", "observed": plain,
       "holds": min(plain["faults"][1:]) > _TEMP_PAGES // 2},
      # The first runs grow the heap, sometimes over a few runs as allocation orders settle.
      {"name": "host_memory/retained_runs_fault_nothing", "observed": retained,
       "holds": bool(retained["applied"]) and sorted(retained["faults"][1:])[1] < _TEMP_PAGES // 20},
  ]


def run_checks() -> list[dict]:
  context = {"jax": jax.__version__, "jaxlib": importlib.metadata.version("jaxlib"),
             "platform": platform.platform()}
  records = compiler_option_checks() + [bfloat16_loop_check()] + host_memory_checks()
  return [{**record, **context} for record in records]


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("out", None, "JSON file for the records.", flag_values=fv)


def main(argv) -> None:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}")
  records = run_checks()
  for record in records:
    print(f"{record['name']}\tholds={record['holds']}\t{json.dumps(record['observed'])}")
  if FLAGS.out:
    Path(FLAGS.out).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
  cli.run(main, "benchmarks.xla_cpu_checks", define_flags)
