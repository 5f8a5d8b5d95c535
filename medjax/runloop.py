"""Pieces every medjax training loop shares (the supervised trainer and the CAE of the
frozen-feature stage), kept outside both so that neither imports the other.

``Checkpoints``: Orbax checkpoints of a train state, the latest few for resuming and the
best for early stopping. Orbax writes each step into a temporary folder and renames it
when complete, so a run killed mid-write leaves the previous checkpoint intact and the
partial one is ignored.
Saving is synchronous: the train step donates the state's buffers, so they must be fully
written before the next step reuses them.
"""
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from medjax import cli


class NoCheckpoint(cli.UserError):
  """A workdir whose run saved no checkpoint: it did not finish."""


def restore_trained(workdir: Path, config) -> dict:
  """The trained ``{"params", **model_state}`` of the finished run in ``workdir`` with
  ``config``, as the run evaluated them (:meth:`Checkpoints.trained_variables`); what every
  tool over a finished supervised run restores."""
  ckpts = Checkpoints(workdir, keep=config.keep_checkpoints)
  try:
    variables = ckpts.trained_variables()
  finally:
    ckpts.close()
  if variables is None:
    raise NoCheckpoint(f"{Path(workdir) / 'checkpoints'} holds no checkpoint; the run did not "
                       f"finish: rerun python -m medjax.main with the same --config and "
                       f"--workdir={workdir} to finish it")
  return variables


def check_finite(what: str, **values) -> None:
  """Stops a diverged run before it saves: raises ``FloatingPointError`` naming ``what``
  (where it happened and what to change) when any of ``values`` is NaN or infinite."""
  bad = {k: v for k, v in values.items() if not np.all(np.isfinite(v))}
  if bad:
    shown = ", ".join(f"{k} {v}" for k, v in values.items())
    raise FloatingPointError(f"{what} ({shown})")


class Checkpoints:
  def __init__(self, workdir: Path, keep: int = 2):
    def options(max_to_keep):
      return ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                          enable_async_checkpointing=False)
    self.latest = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options(keep))
    self.best = ocp.CheckpointManager(Path(workdir).absolute() / "best_checkpoint", options=options(1))

  @staticmethod
  def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)

  def restore_latest(self, state):
    """Returns ``state`` restored from the latest checkpoint, or ``state`` itself if none."""
    step = self.latest.latest_step()
    if step is None:
      return state
    try:
      return self.latest.restore(step, args=ocp.args.StandardRestore(self._abstract(state)))
    except ValueError as e:  # Orbax: the stored tree's structure or shapes differ.
      why = str(e).splitlines()[0].split(". ")[0].rstrip(":.")
      raise cli.UserError(
          f"{self.latest.directory}: its checkpoint at step {step} holds another model than "
          f"this config builds ({why}); rerun with the config the run was started with, or "
          f"use a new --workdir") from None

  def latest_step(self):
    return self.latest.latest_step()

  def save_latest(self, step: int, state) -> None:
    self.latest.save(step, args=ocp.args.StandardSave(state))

  def save_best(self, step: int, params) -> None:
    """Replaces the kept parameters; a step saved before a kill and reached again on resume
    is overwritten (Orbax refuses to save a step twice)."""
    if step in self.best.all_steps():
      self.best.delete(step)
    self.best.save(step, args=ocp.args.StandardSave(params), force=True)

  def restore_best(self, params):
    step = self.best.latest_step()
    if step is None:
      return params
    return self.best.restore(step, args=ocp.args.StandardRestore(self._abstract(params)))

  def trained_variables(self):
    """The finished run's ``{"params", **model_state}`` with the parameters it evaluated:
    those of ``best_checkpoint`` where the trainer kept one (the epoch early stopping chose,
    or the moving average of a run without early stopping), else the latest; None when no
    checkpoint was saved."""
    step = self.latest.latest_step()
    if step is None:
      return None
    state = self.latest.restore(step, args=ocp.args.StandardRestore())
    params = state["params"]
    if self.best.latest_step() is not None:
      params = self.best.restore(self.best.latest_step(), args=ocp.args.StandardRestore())
    return {"params": params, **state["model_state"]}

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()
