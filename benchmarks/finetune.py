"""The fine-tuning train step of EfficientNet-Lite0 (configs/finetune.py) against PyTorch.

medjax runs the trainer's step (``medjax.train.step.make_train_steps``) on the config's
model, loss and optimiser, from the imported ImageNet weights, on a batch already on the
mesh. Two cases:

* ``finetune/efficientnet_lite0_full_224_b32``: every layer trained, batch norm updated,
  SGD with momentum, plain cross-entropy, 224 px, batch 32: the step the issue measured;
* ``finetune/efficientnet_lite0_recipe``: the default recipe's step (configs/finetune.py as
  it stands: every layer trained, batch norm on its running statistics, AdamW, label
  smoothing, class weights, EMA) at its training size.

The peer is the same network as ``benchmarks/extraction.py`` defines it, with a new
1280 -> 2 classifier, in PyTorch on the CPU (or the GPU medjax runs on), stepping with
``zero_grad``, ``backward``, ``step``; for the recipe, frozen stages (if the config freezes
any) run under ``torch.no_grad()`` in eval mode, only the rest is optimised, and batch norm
uses its running statistics where the config freezes it, as medjax does.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import extraction, timing
from benchmarks.train_step import _labels, _nchw
from configs import finetune
from medjax import optim, parallel
from medjax.kernels import precision
from medjax.models import efficientnet_lite
from medjax.train import losses, step as step_lib, transfer


def _medjax_step(config, images: np.ndarray, labels: np.ndarray):
  """The trainer's step from ImageNet weights, as ``train_and_evaluate`` builds it."""
  mesh = parallel.make_mesh()
  model = step_lib.build_model(config, 2)
  tx = optim.make(config.optimizer, steps_per_epoch=100)
  state = transfer.pretrained_state(model, tx, config, images.shape[1:], mesh)
  steps = step_lib.make_train_steps(model, tx, losses.make(config, [1, 3]),
                                    precision.name_of(config))
  batch = parallel.to_global({"image": images, "label": labels}, parallel.batch_sharding(mesh))
  flops = timing.accelerator_flops(steps, state, (batch,))
  holder = {"state": state}

  def run():
    holder["state"], metrics = steps(holder["state"], (batch,))
    return metrics
  return run, flops


def _config(recipe: bool, size: int):
  """The config the case steps, its loss resolved for single-label data as the trainer
  resolves ``"auto"`` from the data."""
  config = finetune.get_config(f"train_size={size}" if recipe else f"mode=full,train_size={size}")
  config.loss = losses.resolve(config.loss, multi_label=False)
  if recipe:
    return config
  with config.unlocked():
    config.model.bn_frozen = False
    config.label_smoothing, config.class_balance = 0.0, ""
    config.optimizer.name, config.optimizer.schedule = "sgd", "constant"
    config.optimizer.weight_decay, config.optimizer.ema_decay = 0.0, 0.0
    config.optimizer.groups = ()
  return config


def _torch_model(frozen_layers: int):
  """``(frozen part, trained part)`` of the peer: the first ``frozen_layers`` modules of the
  extraction network (stem conv, BN, ReLU6, then one module per block) and the rest + head."""
  body = list(extraction.torch_efficientnet_lite0().children())
  frozen = nn.Sequential(*body[:frozen_layers]).eval().to(timing.peer_device())
  trained = nn.Sequential(*body[frozen_layers:], nn.Dropout(0.2), nn.Linear(1280, 2)).train()
  for p in frozen.parameters():
    p.requires_grad_(False)
  return frozen, trained.to(timing.peer_device())


def finetune_case(recipe: bool, batch: int, size: int, repeats: int,
                  compute_dtype: str = "float32") -> dict:
  config = _config(recipe, size)
  config.compute_dtype = compute_dtype
  images = np.random.default_rng(0).random((batch, size, size, 3), np.float32) * 2 - 1
  labels = np.arange(batch, dtype=np.int32) % 2
  medjax_fn, flops = _medjax_step(config, images, labels)
  # Stem = 3 modules, then one per block: the recipe's frozen stages, as medjax freezes them.
  stages = config.model.get("frozen_stages", 0)
  blocks = sum(repeats for *_, repeats in efficientnet_lite._STAGES[:stages])
  frozen, trained = _torch_model(3 + blocks if stages else 0)
  if config.model.get("bn_frozen", False):  # Running statistics, as medjax's recipe keeps them.
    for module in trained.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.eval()
  params = [p for p in trained.parameters() if p.requires_grad]
  if recipe:
    optimizer = torch.optim.AdamW(params, lr=config.optimizer.learning_rate,
                                  weight_decay=config.optimizer.weight_decay)
    weights = torch.tensor([2.0, 2 / 3], device=timing.peer_device())
    loss_fn = lambda logits, y: F.cross_entropy(logits, y, weight=weights, label_smoothing=0.1)
  else:
    optimizer = torch.optim.SGD(params, lr=config.optimizer.learning_rate, momentum=0.9)
    loss_fn = F.cross_entropy
  x, y = _nchw(images), _labels(labels)

  def peer_fn():
    optimizer.zero_grad(set_to_none=True)
    with timing.autocast(compute_dtype):
      with torch.no_grad():
        features = frozen(x)
      logits = trained(features)
    loss = loss_fn(logits.float(), y)
    loss.backward()
    optimizer.step()
  name = "recipe" if recipe else "full"
  return timing.compare(
      f"finetune/efficientnet_lite0_{name}_{size}_b{batch}{timing.suffix(compute_dtype)}", medjax_fn,
                        timing.peer_name(), peer_fn, repeats=repeats, items=batch, flops=flops)


def cases(quick: bool) -> list[timing.Case]:
  # Three repeats even with --quick: a step takes 2-4 s, and one repeat on a 2-core VM
  # varied from 0.85 to 1.28 against PyTorch (docs/performance.md, Zen 3).
  repeats = 3
  return [
      timing.Case("finetune/efficientnet_lite0_full", lambda: finetune_case(False, 32, 224, repeats)),
      timing.Case("finetune/efficientnet_lite0_full_bf16",
                  timing.needs_bf16_units(lambda: finetune_case(False, 32, 224, repeats, "bfloat16"))),
      timing.Case("finetune/efficientnet_lite0_recipe", lambda: finetune_case(True, 32, 192, repeats)),
  ]
