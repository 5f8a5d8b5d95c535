"""``medjax.kernels.host_memory`` sets its policy in a fresh interpreter, and the benchmark that
checks glibc's side of it (page faults with and without the policy) runs and reports.

Whether glibc then stops faulting is the C library's behaviour, not medjax's: it is
measured by ``python -m benchmarks.xla_cpu_checks``, not asserted here."""
import json
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
  code = ("from medjax.kernels import host_memory\n"
          "print(host_memory.retain_freed_blocks(), host_memory.retaining())\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                       text=True, check=True)
  assert out.stdout.split() == ["True", "True"]


def test_xla_cpu_checks_report_every_premise(tmp_path):
  out = tmp_path / "checks.json"
  subprocess.run([sys.executable, "-m", "benchmarks.xla_cpu_checks", "--out", str(out)],
                 cwd=REPO_ROOT, check=True, capture_output=True, timeout=600)
  records = json.loads(out.read_text())
  names = {r["name"] for r in records}
  assert "compiler_options/convolutions_leave_ynnpack" in names
  assert "host_memory/retained_runs_fault_nothing" in names
  for record in records:
    assert record["holds"] in (True, False, None) and record["jaxlib"] and "observed" in record
