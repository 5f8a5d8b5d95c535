"""The saliency methods on a model whose answer depends on one known region."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.explain import methods
from medjax.inference import Run


class TopLeft(nn.Module):
  """Class 1's logit is the mean of a 1x1 conv's output over the top-left 8x8 corner."""

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(2, (1, 1), name="conv")(x)
    corner = y[:, :8, :8, 0].mean(axis=(1, 2))
    return jnp.stack([-corner, corner], axis=-1)


def _run():
  model = TopLeft()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
  variables = jax.tree.map(jnp.abs, variables)  # A positive kernel: bright corner, class 1.
  return Run(workdir=None, config=None, results={}, class_names=("a", "b"), multi_label=False,
             pp="", context={}, logits=lambda v, x: model.apply(v, x), variables=variables)


def test_maps_single_out_the_region_the_answer_depends_on():
  run = _run()
  image = np.random.default_rng(0).uniform(0.2, 1.0, (32, 32, 1)).astype(np.float32)
  assert methods.layers(run, image) == ["conv"]
  for method in ("occlusion", "integrated_gradients"):
    heat = methods.explain(run, image, 1, method)
    assert heat.shape == (32, 32) and heat.min() >= 0
    assert heat[:8, :8].mean() > 5 * heat[16:, 16:].mean(), method
  cam = methods.explain(run, image, 1, "gradcam")
  assert cam.shape == (32, 32) and cam.min() >= 0 and cam.max() > 0
