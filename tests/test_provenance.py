"""``medjax.provenance`` reads the CPU's model and ISA features from /proc/cpuinfo."""
import subprocess
from pathlib import Path

from medjax import provenance

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 amx_int8 avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2
"""


def test_cpu_reads_model_and_isa_of_the_first_processor(monkeypatch, tmp_path):
  fake = tmp_path / "cpuinfo"
  fake.write_text(CPUINFO)
  real_path = Path

  monkeypatch.setattr(provenance, "Path", lambda p: real_path(fake) if p == "/proc/cpuinfo"
                      else real_path(p))
  info = provenance.cpu()
  assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
  assert info["family"] == "GenuineIntel/6/143"
  assert info["isa"] == ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
                         "amx_bf16", "amx_int8"]
  assert info["cores"] >= 1


def test_environment_names_versions_and_lock():
  env = provenance.environment()
  assert env["packages"]["jax"] and env["packages"]["numpy"]
  assert env["lock_sha256"] is None or len(env["lock_sha256"]) == 64
  assert env["backend"] and env["devices"] >= 1


def test_source_names_the_commit_and_whether_tracked_files_changed(tmp_path):
  git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True,
                                  capture_output=True)
  git("init", "-q")
  (tmp_path / "f.py").write_text("x = 1\n")
  git("add", "f.py")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
  head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                        capture_output=True, text=True).stdout.strip()
  assert provenance.source(tmp_path) == {"commit": head, "dirty": False}
  (tmp_path / "f.py").write_text("x = 2\n")
  assert provenance.source(tmp_path) == {"commit": head, "dirty": True}
  assert provenance.source(tmp_path / "not_a_checkout") is None
  (tmp_path / "sub").mkdir()
  assert provenance.source(tmp_path / "sub") is None  # Inside another repository.
  # A run records the commit its process started from, not one made while it trained.
  assert provenance.source_at_start(tmp_path) == {"commit": head, "dirty": True}
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
  assert provenance.source(tmp_path)["commit"] != head
  assert provenance.source_at_start(tmp_path) == {"commit": head, "dirty": True}
