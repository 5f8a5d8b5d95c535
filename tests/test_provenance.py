"""``medjax.provenance`` reads the CPU's model and ISA features from /proc/cpuinfo."""
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
