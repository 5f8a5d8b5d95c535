"""Fixtures shared by the kernel tests."""
import pytest

from medjax.kernels import onednn


@pytest.fixture(params=["xla", "onednn"])
def bfloat16_route(request, monkeypatch):
  """A bfloat16 product test on both routes: XLA's forms with oneDNN off, and oneDNN's
  matmul where it has bfloat16 kernels on this CPU (skipped elsewhere)."""
  if request.param == "xla":
    monkeypatch.setattr(onednn, "usable", lambda: False)
  elif not (onednn.usable() and onednn.bfloat16_kernels()):
    pytest.skip(f"oneDNN has no bfloat16 kernels here ({onednn.state()})")
  return request.param
