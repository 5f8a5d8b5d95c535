"""VLAD on a hand-computed example, masking and the normalisation options."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.features import vlad
from tests.conftest import run_on_devices


CENTERS = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
# (1, 1) and (2, -1) go to centre 0, (9, 2) to centre 1; the last row is padding.
DESCRIPTORS = np.array([[[1.0, 1.0], [2.0, -1.0], [9.0, 2.0], [100.0, -100.0]]], np.float32)
MASK = np.array([[True, True, True, False]])
RAW = np.array([3.0, 0.0, -1.0, 2.0])  # residual sums: (1,1)+(2,-1) and (9,2)-(10,0)


def test_hand_computed_unnormalised_and_l2():
  got = vlad.vlad(DESCRIPTORS, CENTERS, MASK, l2_norm=False)
  np.testing.assert_allclose(got[0], RAW, rtol=1e-6)
  got = vlad.vlad(DESCRIPTORS, CENTERS, MASK)
  np.testing.assert_allclose(got[0], RAW / np.sqrt(14.0), rtol=1e-6)


def test_mask_excludes_padding():
  unmasked = vlad.vlad(DESCRIPTORS, CENTERS, l2_norm=False)
  np.testing.assert_allclose(unmasked[0], RAW + np.array([0.0, 0.0, 90.0, -100.0]), rtol=1e-6)
  # Same image without the padding row, and a batch with a fully padded image.
  batch = np.concatenate([DESCRIPTORS, DESCRIPTORS])
  mask = np.array([[True, True, True, False], [False] * 4])
  got = vlad.vlad(batch, CENTERS, mask, intra_norm=True, power_alpha=0.5)
  ref = vlad.vlad(DESCRIPTORS[:, :3], CENTERS, intra_norm=True, power_alpha=0.5)
  np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
  np.testing.assert_array_equal(got[1], np.zeros(4))


def test_power_normalisation():
  got = vlad.vlad(DESCRIPTORS, CENTERS, MASK, power_alpha=0.5)
  expected = np.sign(RAW) * np.sqrt(np.abs(RAW)) / np.sqrt(6.0)
  np.testing.assert_allclose(got[0], expected, rtol=1e-6)
  assert np.all(np.sign(got[0]) == np.sign(RAW))
  np.testing.assert_allclose(jnp.linalg.norm(got[0]), 1.0, rtol=1e-6)


def test_intra_normalisation():
  got = vlad.vlad(DESCRIPTORS, CENTERS, MASK, intra_norm=True, l2_norm=False)
  np.testing.assert_allclose(got[0], [1.0, 0.0, -1 / np.sqrt(5), 2 / np.sqrt(5)], rtol=1e-6)
  got = vlad.vlad(DESCRIPTORS, CENTERS, MASK, intra_norm=True)
  np.testing.assert_allclose(got[0], [1.0, 0.0, -1 / np.sqrt(5), 2 / np.sqrt(5)] / np.sqrt(2.0),
                             rtol=1e-6)
  # A centre with no descriptor keeps a zero block instead of NaNs.
  three = np.concatenate([CENTERS, [[0.0, 50.0]]]).astype(np.float32)
  got = vlad.vlad(DESCRIPTORS, three, MASK, intra_norm=True)
  assert np.all(np.isfinite(got)) and np.all(got[0, 4:] == 0.0)


def test_random_batch_against_numpy():
  rng = np.random.default_rng(0)
  desc = rng.normal(size=(3, 50, 16)).astype(np.float32)
  centers = rng.normal(size=(8, 16)).astype(np.float32)
  mask = rng.random((3, 50)) < 0.8
  got = np.asarray(vlad.vlad(desc, centers, mask, l2_norm=False))
  for b in range(3):
    x = desc[b][mask[b]]
    labels = ((x[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
    expected = np.stack([(x[labels == j] - centers[j]).sum(0) for j in range(8)]).ravel()
    np.testing.assert_allclose(got[b], expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(vlad.vlad(desc, centers, mask), axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_sharded_batch_matches_unsharded():
  script = """
      import jax, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from medjax.features import vlad
      rng = np.random.default_rng(0)
      desc = rng.normal(size=(4, 30, 8)).astype(np.float32)
      mask = rng.random((4, 30)) < 0.9
      centers = rng.normal(size=(5, 8)).astype(np.float32)
      data = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
      got = vlad.vlad(jax.device_put(desc, data), centers, jax.device_put(mask, data),
                      power_alpha=0.5, intra_norm=True)
      ref = vlad.vlad(desc, centers, mask, power_alpha=0.5, intra_norm=True)
      np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
      print("ok")
  """
  run_on_devices(script)


@pytest.mark.parametrize("batch, per", [(7, 3), (12, 4), (10, 8), (5, 16)])
def test_encoding_in_image_chunks_matches_one_chunk(batch, per):
  # (7, 3) pads the batch to 9; (10, 8) takes the divisor 5; (5, 16) is one chunk.
  rng = np.random.default_rng(batch)
  desc = rng.normal(size=(batch, 20, 6)).astype(np.float32)
  centers = rng.normal(size=(4, 6)).astype(np.float32)
  mask = rng.random((batch, 20)) < 0.7
  whole = vlad.vlad(desc, centers, mask, images_per_chunk=batch, l2_norm=False)
  chunked = vlad.vlad(desc, centers, mask, images_per_chunk=per, l2_norm=False)
  np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)
  # Padded images leave no trace: an image's code depends on its own descriptors only.
  alone = vlad.vlad(desc[-1:], centers, mask[-1:], l2_norm=False)
  np.testing.assert_allclose(chunked[-1], alone[0], rtol=1e-6, atol=1e-6)

