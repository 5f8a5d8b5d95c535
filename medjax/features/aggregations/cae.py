"""``cae``: system 3's zero-bias convolutional auto-encoder (``medjax.features.cae``) trained
on the train split's conv maps, then its zero-bias pooled codes, flattened -> L2.

Training runs on the pieces the supervised trainer uses (``medjax.runloop``'s Orbax
checkpoints and divergence check, ``medjax.optim``'s optimiser, ``medjax.eval.writers``),
so a killed run resumes at its last epoch with the same batch order.
"""
import logging

import jax
import jax.numpy as jnp
import numpy as np

from medjax import optim, parallel
from medjax.kernels import precision
from medjax.features import cae, extract
from medjax.features.aggregations import Aggregation, Stage, register
from medjax.features.norm import l2_normalize
from medjax.runloop import Checkpoints, check_finite


def _rows_on_mesh(maps: np.ndarray, rows: np.ndarray, sharding) -> jax.Array:
  """``maps[rows]`` as a global batch. Every process holds all maps, so each fills its own
  devices' rows."""
  batch = maps[rows]
  return jax.make_array_from_callback(batch.shape, sharding, lambda index: batch[index])


def train(cfg, maps: np.ndarray, *, seed: int, stage: Stage,
          compute_dtype: str = "float32") -> tuple[dict, int]:
  """Trains the zero-bias CAE on ``maps`` ``(N, H, W, C)``; returns ``(parameters, steps)``.

  Epochs visit the maps in a permutation drawn from ``(seed, epoch)`` in batches of
  ``cfg.batch_size`` (the remainder of an epoch is dropped so every step has one shape),
  ``cfg.steps_per_call`` steps per compiled call (fewer at an epoch's end), and the state
  (step, parameters, optimiser with its plateau scale) is checkpointed at every epoch end.
  Training stops early once the epoch loss has converged (``cae.loss_converged`` with
  ``cfg.converge_rtol`` and ``cfg.converge_patience``; a resumed run counts anew).
  """
  if cfg.steps_per_call < 1:
    raise ValueError(f"config.cae.steps_per_call={cfg.steps_per_call} must be at least 1")
  n = len(maps)
  batch_size = min(cfg.batch_size, n)
  steps_per_epoch = n // batch_size
  tx = optim.make(cfg.optimizer, steps_per_epoch)
  params = cae.init(jax.random.PRNGKey(seed), maps.shape[-1], cfg.filters)
  state = parallel.replicate({"step": jnp.zeros((), jnp.int32), "params": params,
                              "opt_state": tx.init(params)}, stage.mesh)
  ckpts = Checkpoints(stage.workdir / "cae", keep=2)
  state = ckpts.restore_latest(state)
  step = int(state["step"])
  if step:
    logging.info("Resuming CAE training from the checkpoint at step %d.", step)
  writer = stage.open_writer(step)
  params, opt_state = state["params"], state["opt_state"]
  sharding = parallel.batch_sharding(stage.mesh)
  history = []
  for epoch in range(step // steps_per_epoch, cfg.num_epochs):
    order = np.random.default_rng([seed, epoch]).permutation(n)
    losses = []
    for first in range(0, steps_per_epoch, cfg.steps_per_call):
      batches = tuple(_rows_on_mesh(maps, order[s * batch_size:(s + 1) * batch_size], sharding)
                      for s in range(first, min(first + cfg.steps_per_call, steps_per_epoch)))
      params, opt_state, values = cae.train_steps(params, opt_state, batches, tx,
                                                  reduction=cfg.loss_reduction,
                                                  compute_dtype=compute_dtype)
      losses.extend(values)
    step = (epoch + 1) * steps_per_epoch
    mean_loss = float(np.mean(jax.device_get(losses)))
    check_finite(f"CAE training diverged in epoch {epoch + 1}; lower "
                 f"cae.optimizer.learning_rate", loss=mean_loss)
    ckpts.save_latest(step, {"step": jnp.asarray(step, jnp.int32), "params": params,
                             "opt_state": opt_state})
    lr = optim.current_learning_rate(cfg.optimizer, steps_per_epoch, opt_state, step - 1)
    writer.write_scalars(step, {"cae/loss": mean_loss, "cae/epoch": epoch + 1,
                                "cae/learning_rate": float(lr)})
    writer.flush()
    history.append(mean_loss)
    if cae.loss_converged(history, cfg.converge_rtol, cfg.converge_patience):
      logging.info("CAE loss converged at epoch %d (%.6g).", epoch + 1, mean_loss)
      break
  ckpts.wait()
  ckpts.close()
  return params, step


def fit(stage: Stage):
  maps, _ = extract.load(stage.single_scale("train"))
  params, steps = train(stage.config.cae, maps, seed=stage.config.seed, stage=stage,
                        compute_dtype=precision.name_of(stage.config))
  height, width, filters = maps.shape[1] // 2, maps.shape[2] // 2, params["w"].shape[-1]
  return {"params": params}, {"cae/dims": height * width * filters, "cae/steps": steps}


def encode(config, state, feats):
  (maps,) = feats
  return l2_normalize(cae.features(state["params"], maps, precision.name_of(config)))


register(Aggregation("cae", pool=False, fit=fit, encode=encode, l2=lambda config: False))
