"""``medjax.host_memory`` sets its policy in a fresh interpreter, and the benchmark that
checks glibc's side of it (page faults with and without the policy) runs and reports.

Whether glibc then stops faulting is the C library's behaviour, not medjax's: it is
measured by ``python -m benchmarks.xla_cpu_checks``, not asserted here."""
import json
import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # Fresh interpreters, each starting JAX.
glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the policy is glibc's mallopt; other C libraries are left as they are")


@glibc_only
def test_policy_applies_before_jax_starts():
  # medjax.main re-executes itself on huge pages (or sets this policy) in main(): what it has
  # imported by then is paid twice, so JAX (seconds) must not be among it.
  code = ("import sys\n"
          "from medjax import host_memory, main\n"
          "print('jax' in sys.modules)\n"
          "print(host_memory.retain_freed_blocks(), host_memory.retaining())\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                       text=True, check=True)
  assert out.stdout.split() == ["False", "True", "True"]


@glibc_only
def test_huge_pages_reexecute_the_command_once_with_the_tunable():
  from medjax import host_memory
  if not host_memory.huge_pages_possible():
    pytest.skip("glibc < 2.35 or transparent huge pages off: use_huge_pages leaves the process")
  code = ("import os, sys\n"
          "from medjax import host_memory\n"
          "print('start', os.getpid(), flush=True)\n"
          "host_memory.use_huge_pages()\n"
          "print('on', host_memory.huge_pages_on(), os.environ['GLIBC_TUNABLES'], sys.argv[1:])\n")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=7"  # A user's own tunable is kept.
  out = subprocess.run([sys.executable, "-c", code, "arg1", "--flag=2"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, check=True).stdout.splitlines()
  starts = [line for line in out if line.startswith("start")]
  assert len(starts) == 2 and len(set(starts)) == 1  # Re-executed once, same process.
  assert out[-1] == ("on True glibc.malloc.tcache_count=7:glibc.malloc.hugetlb=1 "
                     "['arg1', '--flag=2']")


def test_xla_cpu_checks_report_every_premise(tmp_path):
  out = tmp_path / "checks.json"
  subprocess.run([sys.executable, "-m", "benchmarks.xla_cpu_checks", "--out", str(out)],
                 cwd=REPO_ROOT, check=True, capture_output=True, timeout=600)
  records = json.loads(out.read_text())
  names = {r["name"] for r in records}
  assert "compiler_options/convolutions_leave_ynnpack" in names
  assert "bfloat16/ops_round_trip_per_read" in names
  assert "host_memory/retained_runs_fault_nothing" in names
  for record in records:
    assert record["holds"] in (True, False, None) and record["jaxlib"] and "observed" in record
