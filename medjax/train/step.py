"""The pure pieces of supervised training: the train state, its initialisation, the train
step (jitted several steps to a call) and the jitted predict function.

They need only JAX, Flax, optax and the model registry (no input pipeline, no metric
writers, no TensorFlow), so that a benchmark or a user's own loop on an accelerator box can
run exactly the step ``python -m medjax.main`` runs. ``trainer`` builds the loop around them.
"""
import flax
import jax
import jax.numpy as jnp
import optax

from medjax import kernels, parallel
from medjax.kernels import global_norm, precision
from medjax.models import registry
from medjax.train import losses


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  model_state: dict  # Non-trainable collections such as batch_stats ({} for the papers' nets).
  opt_state: optax.OptState
  rng: jax.Array
  best_metric: jax.Array  # Early stopping: best validation value so far, and its epoch.
  best_epoch: jax.Array
  stopped: jax.Array      # True once early stopping fired, so a resumed run does not go on.


def model_kwargs(config) -> dict:
  return {k: v for k, v in config.model.items() if k != "name"}


def build_model(config, num_classes: int):
  """The configured model; ``config.model.kernels`` ("auto" if absent) picks its ops
  (``medjax.kernels``), resolved by the registry for the backend it is built on."""
  return registry.get_model(config.model.name, num_classes=num_classes, **model_kwargs(config))


def _initializer(model, tx, image_shape):
  def init(rng):
    params_rng, rng = jax.random.split(rng)
    variables = model.init({"params": params_rng, "dropout": params_rng},
                           jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=dict(variables),
                      opt_state=tx.init(params), rng=rng,
                      best_metric=jnp.array(-jnp.inf, jnp.float32),
                      best_epoch=jnp.zeros((), jnp.int32), stopped=jnp.zeros((), bool))
  return init


def _key(config) -> jax.Array:
  # A raw uint32 key (not a typed key) so that Orbax can store it.
  return jax.random.PRNGKey(config.seed)


def init_state(model, tx, config, image_shape, mesh, select=None):
  """Initialises the state from ``config.seed``, replicated over the mesh.

  With ``select`` (``TrainState -> pytree``) only what it picks is returned, and only that
  is computed: XLA drops the rest, so a run that imports most of its weights does not
  compile and draw random values for them (EfficientNet-Lite0's 117 draws: 11 s of
  compilation, against 0.3 s for its classifier's).
  """
  init = _initializer(model, tx, image_shape)
  fn = init if select is None else (lambda rng: select(init(rng)))
  return kernels.jit(fn, once=True, out_shardings=parallel.replicated(mesh))(_key(config))


def abstract_state(model, tx, config, image_shape, mesh) -> TrainState:
  """The state's shapes, dtypes and shardings without computing it: what a restore from a
  checkpoint, or an import of pretrained weights, is laid out on."""
  init = _initializer(model, tx, image_shape)
  return jax.jit(init, out_shardings=parallel.replicated(mesh)).eval_shape(_key(config))


def make_train_step(model, tx, loss_name: str, compute_dtype: str = "float32"):
  """The pure step ``(state, batch) -> (state, metrics)``; :func:`make_train_steps` jits it.

  ``compute_dtype`` runs the model in that float (:mod:`medjax.kernels.precision`); the
  parameters, their gradients, the optimizer and the batch statistics stay float32.
  """
  dtype = precision.compute_dtype(compute_dtype)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    mutable = list(state.model_state)
    images = precision.cast(batch["image"], dtype)

    def objective(params):
      variables = {"params": precision.cast(params, dtype), **state.model_state}
      if mutable:
        (logits, _), new_model_state = model.apply(variables, images, train=True,
                                                   rngs={"dropout": rng}, mutable=mutable)
        new_model_state = jax.tree.map(lambda new, old: new.astype(old.dtype),
                                       new_model_state, state.model_state)
      else:
        logits, _ = model.apply(variables, images, train=True, rngs={"dropout": rng})
        new_model_state = {}
      logits = logits.astype(jnp.float32)
      loss = losses.loss_fn(loss_name, logits, batch["label"]).mean()
      return loss, (logits, new_model_state)

    (loss, (logits, new_model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state, model_state=new_model_state)
    # The parameter norm is logged and, with the loss, checked finite before any save.
    return state, {"loss": loss, "param_norm": global_norm(state.params),
                   "accuracy": losses.batch_accuracy(loss_name, logits, batch["label"])}
  return train_step


def make_train_steps(model, tx, loss_name: str, compute_dtype: str = "float32"):
  """Jitted ``(state, batches) -> (state, [metrics of each step])`` for a tuple of batches:
  the steps in one compiled call (:func:`medjax.kernels.run_steps` says why)."""
  step = make_train_step(model, tx, loss_name, compute_dtype)

  def train_steps(state: TrainState, batches: tuple):
    return kernels.run_steps(step, state, batches)
  return kernels.jit(train_steps, donate_argnums=0)


def make_predict(model, compute_dtype: str = "float32"):
  """Jitted ``(params, model_state, images) -> (logits, pre_logits)``, both float32,
  computed in ``compute_dtype``."""
  dtype = precision.compute_dtype(compute_dtype)

  @kernels.jit
  def predict(params, model_state, images):
    logits, features = model.apply({"params": precision.cast(params, dtype), **model_state},
                                   precision.cast(images, dtype), train=False)
    return precision.to_float32((logits, features["pre_logits"]))
  return predict
