"""The papers' optimisers: SGD with momentum (optionally Nesterov) and L2 weight decay,
under a constant, step-decay or anneal-on-plateau learning rate.

Weight decay is Caffe-style L2 (``wd * w`` added to the gradient before momentum) on
kernels only (parameters with more than one dimension), as the AlexNet/VGG prototxts set
``decay_mult: 0`` for biases. Anneal-on-plateau (system 3: "decaying the rate by a factor
of 10 when the error plateaued") is optax's ``reduce_on_plateau`` fed the training loss
and averaged over an epoch; its state lives in the optimiser state, so it is checkpointed
and resumes with the run.

Fine-tuning adds (all optional keys of ``config.optimizer``): ``name`` "adamw"
(decoupled decay, kernels only), ``schedule`` "warmup_cosine", ``groups`` -- ordered
``(regex, lr_mult)`` pairs over parameter paths (first match wins, unmatched: 1), through
``optax.multi_transform``, where multiplier 0 freezes the group outright (no update, no
decay) -- and ``ema_decay`` > 0, an exponential moving average of the parameters kept in
the optimiser state (so it is checkpointed) and used for evaluation.
"""
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def _kernel_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def learning_rate_schedule(cfg, steps_per_epoch: int) -> optax.Schedule:
  if cfg.schedule in ("constant", "plateau"):
    return optax.constant_schedule(cfg.learning_rate)
  if cfg.schedule == "warmup_cosine":
    total = max(cfg.total_epochs * steps_per_epoch, 1)
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, total,
                                              end_value=cfg.learning_rate * cfg.final_scale)
  if cfg.schedule == "step":
    return optax.exponential_decay(cfg.learning_rate,
                                   transition_steps=cfg.step_epochs * steps_per_epoch,
                                   decay_rate=cfg.step_gamma, staircase=True)
  raise ValueError(f"config.optimizer.schedule={cfg.schedule!r}; expected 'constant', 'step', "
                   f"'plateau' or 'warmup_cosine'")


def _base(cfg, schedule) -> optax.GradientTransformation:
  if cfg.get("name", "sgd") == "adamw":
    return optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=_kernel_mask)
  parts = []
  if cfg.weight_decay:
    parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=_kernel_mask))
  parts.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  return optax.chain(*parts)


def group_labels(groups, params) -> dict:
  """Each parameter's group index (``len(groups)`` when no regex matches its path)."""
  patterns = [re.compile(regex) for regex, _ in groups]

  def label(path, _):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return next((str(i) for i, p in enumerate(patterns) if p.search(name)), str(len(groups)))
  return jax.tree_util.tree_map_with_path(label, params)


class EmaState(NamedTuple):
  ema: optax.Params


def ema_of_params(decay: float) -> optax.GradientTransformation:
  """Last in a chain: tracks ``decay * ema + (1 - decay) * (params + updates)``; passes the
  updates through unchanged. Starts at the initial (e.g. imported) parameters."""
  def init(params):
    return EmaState(jax.tree.map(jnp.array, params))

  def update(updates, state, params=None):
    ema = jax.tree.map(lambda e, p, u: decay * e + (1 - decay) * (p + u),
                       state.ema, params, updates)
    return updates, EmaState(ema)
  return optax.GradientTransformation(init, update)


def make(cfg, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
  """The optimiser for ``config.optimizer``; its ``update`` takes ``value=loss``."""
  groups = tuple(tuple(g) for g in cfg.get("groups", ()) or ())
  if groups:
    def scaled(mult):
      if mult == 0:
        return optax.set_to_zero()
      return _base(cfg, lambda step: learning_rate_schedule(cfg, steps_per_epoch)(step) * mult)
    transforms = {str(i): scaled(m) for i, (_, m) in enumerate(groups)}
    transforms[str(len(groups))] = scaled(1.0)
    parts = [optax.multi_transform(transforms, lambda params: group_labels(groups, params))]
  else:
    parts = [_base(cfg, learning_rate_schedule(cfg, steps_per_epoch))]
  if cfg.schedule == "plateau":
    parts.append(optax.contrib.reduce_on_plateau(
        factor=cfg.plateau_factor, patience=cfg.plateau_patience, rtol=cfg.plateau_rtol,
        accumulation_size=steps_per_epoch, min_scale=cfg.plateau_min_scale))
  if cfg.get("ema_decay", 0.0):
    parts.append(ema_of_params(cfg.ema_decay))
  return optax.chain(*parts)


def eval_params(cfg, state):
  """The parameters to evaluate: their moving average when ``ema_decay`` is set."""
  if cfg.get("ema_decay", 0.0):
    return state.opt_state[-1].ema
  return state.params


def current_learning_rate(cfg, steps_per_epoch: int, opt_state, step) -> jax.Array:
  """The rate applied at ``step``, plateau annealing included (for logging)."""
  lr = learning_rate_schedule(cfg, steps_per_epoch)(step)
  if cfg.schedule == "plateau":
    lr = lr * opt_state[1].scale
  return lr
