"""A backbone taken from a finished fine-tuning workdir (``config.backbone.from_workdir``).

Paper 3's "fine-tuned network + SVM" arms: the frozen-feature pipeline extracts from the
network a supervised run (``configs/finetune.py``) fine-tuned, instead of from the
ImageNet file. The run's own record says which network it was (``results.json``'s config)
and how many classes its head has (``data.json``); its evaluated parameters (the best
checkpoint when early stopping kept one) are read through ``Checkpoints``. Its input is
prepared as the backbone's ImageNet spec says, which is how the fine-tuning fed it.
"""
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp

from medjax import cli
from medjax.models import backbones, registry


def load(cfg) -> tuple[object, dict, backbones.BackboneSpec, str]:
  """``(module, variables, spec, layer)`` of the network fine-tuned in ``cfg.from_workdir``.

  ``layer`` is ``cfg.layer`` when that network is ``cfg.name``, else ``cfg.fallback_layer``
  when it is ``cfg.fallback`` (the offline default's conv map).
  """
  from medjax.data.pipeline import DATA_RECORD
  from medjax.runloop import Checkpoints
  workdir = Path(cfg.from_workdir)
  results_path, data_path = workdir / "results.json", workdir / DATA_RECORD
  for path in (results_path, data_path):
    if not path.is_file():
      raise cli.UserError(f"config.backbone.from_workdir={workdir}: {path.name} not found; "
                          f"expected the workdir of a finished fine-tuning run")
  config = json.loads(results_path.read_text())["config"]
  if config.get("pipeline") != "supervised":
    raise cli.UserError(f"config.backbone.from_workdir={workdir} holds a "
                        f"{config.get('pipeline')!r} run; expected a supervised (fine-tuning) run")
  name = config["model"]["name"]
  try:
    spec = backbones.get_spec(name)
  except KeyError as e:
    raise cli.UserError(f"config.backbone.from_workdir={workdir}: {e.args[0]}") from None
  layers = {cfg.name: cfg.layer, cfg.get("fallback") or cfg.name: cfg.get("fallback_layer")}
  if name != cfg.name and name != cfg.get("fallback"):
    raise cli.UserError(f"config.backbone.from_workdir={workdir} fine-tuned {name!r}; set "
                        f"config.backbone.name={name} and config.backbone.layer to one of its "
                        f"conv maps")
  layer = cfg.layer if name == cfg.name else layers[name]
  num_classes = len(json.loads(data_path.read_text())["class_names"])
  kwargs = {k: v for k, v in config["model"].items() if k != "name"}
  module = registry.get_model(name, num_classes=num_classes, **kwargs)
  ckpts = Checkpoints(workdir)
  variables = ckpts.trained_variables()
  ckpts.close()
  if variables is None:
    raise cli.UserError(f"config.backbone.from_workdir={workdir}: no checkpoint in "
                        f"{workdir / 'checkpoints'}")
  spec = dataclasses.replace(spec, weights=f"{workdir.resolve()}/checkpoints")
  return module, jax.tree.map(jnp.asarray, variables), spec, layer
