"""The pieces both training loops share: the divergence check names where and what to change."""
import math

import pytest

from medjax import runloop


def test_check_finite_passes_finite_values_and_stops_on_nan_or_inf():
  runloop.check_finite("fine", loss=1.0, norm=[2.0, 3.0])
  with pytest.raises(FloatingPointError, match=r"CAE diverged in epoch 2; lower lr \(loss nan"):
    runloop.check_finite("CAE diverged in epoch 2; lower lr", loss=math.nan)
  with pytest.raises(FloatingPointError, match="norm inf"):
    runloop.check_finite("trainer", loss=1.0, norm=math.inf)
