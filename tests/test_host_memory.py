"""``medjax.host_memory``: with the policy set, a jitted program's large temporaries are
reused from run to run instead of being page-faulted in afresh each time.

Each case runs in a fresh interpreter: the policy is process-wide and must precede JAX's
CPU client, which this test process has long since started."""
import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the policy is glibc's mallopt; other C libraries are left as they are")

# A product whose 6000 x 6000 float32 intermediate (144 MB) is an XLA temporary: far above
# glibc's mmap threshold, so without the policy each run maps and faults it in anew.
_PROGRAM = textwrap.dedent("""
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


def _faults(mode: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _PROGRAM, mode], check=True, capture_output=True,
                       text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_retained_blocks_serve_later_runs_without_page_faults():
  retained = _faults("retain")
  assert retained["applied"] is True
  # The first runs grow the heap, sometimes over a few runs as allocation orders settle;
  # then the freed temporary is reused. At least two of the seven later runs fault
  # nothing (without the policy, none does: see the next test).
  assert sorted(retained["faults"][1:])[1] < _TEMP_PAGES // 20, (retained, _faults("plain"))


def test_without_the_policy_each_run_faults_its_temporary_in():
  """The cost the policy removes; should jaxlib one day cache its temporaries itself, this
  fails, and medjax.host_memory can go."""
  plain = _faults("plain")
  assert min(plain["faults"][1:]) > _TEMP_PAGES // 2, plain

