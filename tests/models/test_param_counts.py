"""Parameter counts of the papers' networks against hand computations from their tables."""
import jax
import jax.numpy as jnp
import pytest

from medjax import kernels
from medjax.models.registry import get_model


def count(model, shape):
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
  return sum(x.size for x in jax.tree.leaves(variables))


def conv(k, cin, cout):
  return k * k * cin * cout + cout


def dense(nin, nout):
  return nin * nout + nout


def test_lenet_one_vs_all():
  # 256 -conv15-> 242 -pool-> 121 -conv15-> 107 -pool-> 53; 53*53*50 inputs to FC-500.
  # Each head's logistic layer has the tutorial's two outputs.
  per_head = conv(15, 1, 20) + conv(15, 20, 50) + dense(53 * 53 * 50, 500) + dense(500, 2)
  assert per_head == 70_456_072
  assert count(get_model("lenet_ova", num_classes=4), (1, 256, 256, 1)) == 4 * per_head


def test_modified_alexnet():
  # 227 -> conv1 s4 55 -> pool 27 -> conv2 s2 14 -> conv3 s2 7 -> conv4 s2 4: 4*4*256 = 4096.
  expected = (conv(11, 3, 96) + conv(5, 96, 256) + conv(3, 256, 384) + conv(3, 384, 256)
              + dense(4096, 4096) + dense(4096, 4096) + dense(4096, 5))
  assert expected == 36_002_821
  assert count(get_model("alexnet_anatomy", num_classes=5), (1, 227, 227, 3)) == expected


# variant: (kernel, number of convs, number of pools, first FC width) from the paper's tables.
IRMA = {"A": (3, 3, 3, 4500), "B": (3, 6, 3, 4500), "C": (3, 7, 3, 4500), "D": (3, 8, 4, 1280),
        "E": (5, 3, 2, 5120), "F": (5, 3, 3, 5120), "G": (5, 4, 4, 1280)}
IRMA_TOTALS = {"A": 26_656_745, "B": 26_667_605, "C": 26_671_225, "D": 2_694_025,
               "E": 108_984_085, "F": 30_340_885, "G": 2_699_065}


@pytest.mark.parametrize("variant", sorted(IRMA))
def test_irma_variants(variant):
  k, n_conv, n_pool, fc1 = IRMA[variant]
  side = 128 // 2 ** n_pool
  expected = (conv(k, 1, 20) + (n_conv - 1) * conv(k, 20, 20) + dense(side * side * 20, fc1)
              + dense(fc1, 800) + dense(800, 5))
  assert expected == IRMA_TOTALS[variant]
  model = get_model("irma_cnn", num_classes=5, variant=variant)
  assert count(model, (1, 128, 128, 1)) == expected


def test_models_return_logits_and_pre_logits():
  model = get_model("irma_cnn", num_classes=3, variant="G")
  x = jnp.zeros((2, 128, 128, 1))
  variables = kernels.jit(model.init, once=True)(jax.random.key(0), x)
  logits, features = jax.jit(model.apply)(variables, x)
  assert logits.shape == (2, 3)
  assert features["pre_logits"].shape == (2, 800)


def test_unknown_variant_and_model_names_are_clear():
  with pytest.raises(ValueError, match="variant 'Z' unknown"):
    get_model("irma_cnn", num_classes=5, variant="Z").init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  with pytest.raises(KeyError, match="not a known model"):
    get_model("resnet9000")


def test_modified_alexnet_with_a_pool_after_conv2():
  # 27 -> conv2 s2 14 -> pool 3/2 6 -> conv3 s2 3 -> conv4 s2 2: fc5 sees 2*2*256 = 1024.
  expected = (conv(11, 3, 96) + conv(5, 96, 256) + conv(3, 256, 384) + conv(3, 384, 256)
              + dense(1024, 4096) + dense(4096, 4096) + dense(4096, 5))
  model = get_model("alexnet_anatomy", num_classes=5, pool_after_conv2=True)
  assert count(model, (1, 227, 227, 3)) == expected


# The 2014 paper's Table 1: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per block.
GOOGLENET_2014 = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64),
                  ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
                  ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
                  ("4e", 256, 160, 320, 32, 128, 128), ("5a", 256, 160, 320, 32, 128, 128),
                  ("5b", 384, 192, 384, 48, 128, 128)]


def test_googlenet_2014_has_the_papers_5x5_branches_and_no_batch_norm():
  cin, blocks = 192, {}
  for name, c1, r3, c3, r5, c5, pp in GOOGLENET_2014:
    blocks[name] = (conv(1, cin, c1) + conv(1, cin, r3) + conv(3, r3, c3) + conv(1, cin, r5)
                    + conv(5, r5, c5) + conv(1, cin, pp))
    cin = c1 + c3 + c5 + pp
  # The paper's Table 1 gives 159K and 380K parameters (K = 1024) for 3a and 3b.
  assert round(blocks["3a"] / 1024) in (159, 160) and round(blocks["3b"] / 1024) in (379, 380)
  expected = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192) + sum(blocks.values()) \
      + dense(1024, 1000)
  model = get_model("googlenet", variant="2014")
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  assert set(variables) == {"params"}  # no batch statistics
  assert count(model, (1, 224, 224, 3)) == expected
  assert variables["params"]["inception3a"]["branch3_1"]["conv"]["kernel"].shape == (5, 5, 16, 32)
  torchvision = jax.eval_shape(get_model("googlenet").init, jax.random.key(0),
                               jnp.zeros((1, 224, 224, 3)))
  assert torchvision["params"]["inception3a"]["branch3_1"]["conv"]["kernel"].shape == (3, 3, 16, 32)
