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


def test_resuming_into_another_model_is_a_user_error_naming_the_checkpoint(tmp_path):
  import jax.numpy as jnp
  from medjax import cli
  saved = runloop.Checkpoints(tmp_path)
  saved.save_latest(3, {"kernel": jnp.ones((3, 2))})
  saved.wait()
  for other, why in (({"kernel": jnp.ones((4, 2))}, "shape"),
                     ({"bias": jnp.ones((3, 2))}, "structures do not match")):
    with pytest.raises(cli.UserError, match=f"checkpoint at step 3 holds another model.*{why}"):
      runloop.Checkpoints(tmp_path).restore_latest(other)
  restored = runloop.Checkpoints(tmp_path).restore_latest({"kernel": jnp.zeros((3, 2))})
  assert float(restored["kernel"].sum()) == 6.0
