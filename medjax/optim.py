"""The papers' optimisers: SGD with momentum (optionally Nesterov) and L2 weight decay,
under a constant, step-decay or anneal-on-plateau learning rate.

Weight decay is Caffe-style L2 (``wd * w`` added to the gradient before momentum) on
kernels only (parameters with more than one dimension), as the AlexNet/VGG prototxts set
``decay_mult: 0`` for biases. Anneal-on-plateau (system 3: "decaying the rate by a factor
of 10 when the error plateaued") is optax's ``reduce_on_plateau`` fed the training loss
and averaged over an epoch; its state lives in the optimiser state, so it is checkpointed
and resumes with the run.
"""
import jax
import optax


def _kernel_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def learning_rate_schedule(cfg, steps_per_epoch: int) -> optax.Schedule:
  if cfg.schedule in ("constant", "plateau"):
    return optax.constant_schedule(cfg.learning_rate)
  if cfg.schedule == "step":
    return optax.exponential_decay(cfg.learning_rate,
                                   transition_steps=cfg.step_epochs * steps_per_epoch,
                                   decay_rate=cfg.step_gamma, staircase=True)
  raise ValueError(f"config.optimizer.schedule={cfg.schedule!r}; expected 'constant', 'step' "
                   f"or 'plateau'")


def make(cfg, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
  """The optimiser for ``config.optimizer``; its ``update`` takes ``value=loss``."""
  parts = []
  if cfg.weight_decay:
    parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=_kernel_mask))
  parts.append(optax.sgd(learning_rate_schedule(cfg, steps_per_epoch), momentum=cfg.momentum or None,
                         nesterov=cfg.nesterov))
  if cfg.schedule == "plateau":
    parts.append(optax.contrib.reduce_on_plateau(
        factor=cfg.plateau_factor, patience=cfg.plateau_patience, rtol=cfg.plateau_rtol,
        accumulation_size=steps_per_epoch, min_scale=cfg.plateau_min_scale))
  return optax.chain(*parts)


def current_learning_rate(cfg, steps_per_epoch: int, opt_state, step) -> jax.Array:
  """The rate applied at ``step``, plateau annealing included (for logging)."""
  lr = learning_rate_schedule(cfg, steps_per_epoch)(step)
  if cfg.schedule == "plateau":
    lr = lr * opt_state[-1].scale
  return lr
