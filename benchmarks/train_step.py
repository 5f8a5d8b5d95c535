"""One training step of each from-scratch network, at the paper's input size and batch.

medjax runs exactly what ``python -m medjax.main`` runs: the system's config, the model
from the registry, ``optim.make`` and ``medjax.train.step.make_train_steps`` (jitted, state
donated, ``config.steps_per_call`` steps per call), on batches already on the device mesh.
A timed call is that many steps on both sides, so seconds and images/s are per call of the
trainer and the ratio is per step. The CAE of system 3 has its own steps,
``medjax.features.cae.train_steps``. The peer is the same architecture, loss and optimiser
written in plain PyTorch (NCHW as users write it, on the device of
:func:`timing.peer_device`), stepping with ``zero_grad``, ``backward``, ``step``.
"""
import functools

import jax
import numpy as np
import optax
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import timing
from configs import alexnet_anatomy, cae_imageclef16, irma_cnn, lenet_imageclef15
from medjax import parallel
from medjax.kernels import precision
from medjax.features import cae
from medjax.models.irma_cnn import VARIANTS as IRMA_VARIANTS
from medjax import optim
from medjax.train import step as step_lib


def _medjax_step(config, num_classes: int, images: np.ndarray, labels: np.ndarray):
  """The trainer's call on ``config``'s model: ``(thunk running config.steps_per_call steps
  on the batch, their FLOPs on an accelerator or None)``."""
  mesh = parallel.make_mesh()
  model = step_lib.build_model(config, num_classes)
  tx = optim.make(config.optimizer, steps_per_epoch=100)
  state = step_lib.init_state(model, tx, config, images.shape[1:], mesh)
  steps = step_lib.make_train_steps(model, tx, config.loss, precision.name_of(config))
  batch = parallel.to_global({"image": images, "label": labels}, parallel.batch_sharding(mesh))
  batches = (batch,) * config.steps_per_call
  flops = timing.accelerator_flops(steps, state, batches)
  holder = {"state": state}

  def run():
    holder["state"], metrics = steps(holder["state"], batches)
    return metrics
  return run, flops


def _nchw(images: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(
      timing.peer_device())


def _labels(labels: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(labels).long().to(timing.peer_device())


def _torch_step(model: nn.Module, loss_fn, optimizer, x: torch.Tensor, target: torch.Tensor,
                steps: int = 1, compute_dtype: str = "float32"):
  def run():
    for _ in range(steps):
      optimizer.zero_grad(set_to_none=True)
      with timing.autocast(compute_dtype):
        logits = model(x)
      loss = loss_fn(logits.float(), target)
      loss.backward()
      optimizer.step()
    return None
  return run


def _sgd(model: nn.Module, cfg) -> torch.optim.SGD:
  """The config's SGD in torch, weight decay on kernels only as ``optim.make`` applies it."""
  kernels = [p for p in model.parameters() if p.ndim > 1]
  others = [p for p in model.parameters() if p.ndim <= 1]
  return torch.optim.SGD([{"params": kernels, "weight_decay": cfg.weight_decay},
                          {"params": others, "weight_decay": 0.0}],
                         lr=cfg.learning_rate, momentum=cfg.momentum)


class TorchLeNet(nn.Module):
  """One head of medjax.models.lenet.LeNet: tanh(maxpool(conv(x)) + b), twice, FC-500, the
  two-output logistic layer, whose log-odds z1 - z0 is the head's logit."""

  def __init__(self, side: int):
    super().__init__()
    self.conv0 = nn.Conv2d(1, 20, 15, bias=False)
    self.conv1 = nn.Conv2d(20, 50, 15, bias=False)
    self.b0 = nn.Parameter(torch.zeros(20, 1, 1))
    self.b1 = nn.Parameter(torch.zeros(50, 1, 1))
    flat = ((side - 14) // 2 - 14) // 2
    self.hidden = nn.Linear(50 * flat * flat, 500)
    self.logistic = nn.Linear(500, 2)

  def forward(self, x):
    x = torch.tanh(F.max_pool2d(self.conv0(x), 2) + self.b0)
    x = torch.tanh(F.max_pool2d(self.conv1(x), 2) + self.b1)
    z = self.logistic(torch.tanh(self.hidden(x.flatten(1))))
    return z[:, 1:] - z[:, :1]


class TorchLeNetOneVsAll(nn.Module):
  def __init__(self, side: int, heads: int = 4):
    super().__init__()
    self.heads = nn.ModuleList(TorchLeNet(side) for _ in range(heads))

  def forward(self, x):
    return torch.cat([h(x) for h in self.heads], dim=1)


class TorchModifiedAlexNet(nn.Module):
  def __init__(self, num_classes: int):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0),
        nn.MaxPool2d(3, 2), nn.Conv2d(96, 256, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(256, 384, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.Linear(4096, num_classes))

  def forward(self, x):
    return self.features(x)


class TorchCaffeAlexNet(nn.Module):
  """medjax.models.alexnet.AlexNet (Caffe's bvlc_alexnet): LRN before the ceil-mode pools,
  two-group conv2/conv4/conv5, dropout after fc6 and fc7."""

  def __init__(self, num_classes: int):
    super().__init__()
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
    lrn = lambda: nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
    self.features = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), lrn(), pool(),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), lrn(), pool(),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), pool(), nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes))

  def forward(self, x):
    return self.features(x)


def torch_irma(variant: str, num_classes: int, side: int) -> nn.Module:
  """medjax.models.irma_cnn.IrmaCNN (20 filters, 'same' convs, FC -> 800 -> classes, dropout)."""
  kernel, layers, first_fc = IRMA_VARIANTS[variant]
  modules, channels = [], 1
  for layer in layers.split():
    if layer == "C":
      modules += [nn.Conv2d(channels, 20, kernel, padding=kernel // 2), nn.ReLU()]
      channels = 20
    else:
      modules.append(nn.MaxPool2d(2))
      side //= 2
  modules += [nn.Flatten(), nn.Linear(20 * side * side, first_fc), nn.ReLU(), nn.Dropout(0.5),
              nn.Linear(first_fc, 800), nn.ReLU(), nn.Dropout(0.5), nn.Linear(800, num_classes)]
  return nn.Sequential(*modules)


def _compare(name: str, steps: int, batch: int, medjax_fn, peer_fn, repeats: int,
             flops) -> dict:
  """``timing.compare`` of two thunks of ``steps`` steps each; the name says how many,
  since the seconds are per call."""
  return timing.compare(f"{name}_{steps}steps", medjax_fn, timing.peer_name(), peer_fn,
                        repeats=repeats, items=batch * steps, flops=flops, steps_per_call=steps)


def _images(batch: int, side: int, channels: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).random((batch, side, side, channels), np.float32)


def lenet_case(batch: int, side: int, repeats: int) -> dict:
  config = lenet_imageclef15.get_config(f"image_size={side}")
  images = _images(batch, side, 1)
  labels = np.arange(batch, dtype=np.int32) % 4
  medjax_fn, flops = _medjax_step(config, 4, images, labels)
  model = TorchLeNetOneVsAll(side).to(timing.peer_device())
  bce = nn.BCEWithLogitsLoss(reduction="none")
  targets = F.one_hot(_labels(labels), 4).float()
  loss_fn = lambda logits, t: bce(logits, t).sum(1).mean()
  peer_fn = _torch_step(model, loss_fn, _sgd(model, config.optimizer), _nchw(images), targets,
                        config.steps_per_call)
  return _compare(f"train_step/lenet_ova_{side}x{side}_b{batch}", config.steps_per_call, batch,
                  medjax_fn, peer_fn, repeats, flops)


def alexnet_case(batch: int, repeats: int, model: str = "modified",
                 num_classes: int = 5, compute_dtype: str = "float32") -> dict:
  """System 2's modified AlexNet, or Caffe's AlexNet (``model="alexnet"``), whose grouped
  convolutions take medjax's "split_groups" route."""
  config = alexnet_anatomy.get_config(f"model={model},batch_size={batch}")
  config.compute_dtype = compute_dtype
  images = _images(batch, 227, 3)
  labels = np.arange(batch, dtype=np.int32) % num_classes
  medjax_fn, flops = _medjax_step(config, num_classes, images, labels)
  peer = TorchModifiedAlexNet if model == "modified" else TorchCaffeAlexNet
  net = peer(num_classes).train().to(timing.peer_device())
  peer_fn = _torch_step(net, F.cross_entropy, _sgd(net, config.optimizer), _nchw(images),
                        _labels(labels), config.steps_per_call, compute_dtype)
  name = "alexnet_anatomy" if model == "modified" else "alexnet_caffe"
  return _compare(f"train_step/{name}_227_b{batch}{timing.suffix(compute_dtype)}",
                  config.steps_per_call, batch,
                  medjax_fn, peer_fn, repeats, flops)


def irma_case(batch: int, repeats: int, variant: str = "C", num_classes: int = 57,
              compute_dtype: str = "float32") -> dict:
  config = irma_cnn.get_config(f"variant={variant}")
  config.compute_dtype = compute_dtype
  images = _images(batch, 128, 1)
  labels = np.arange(batch, dtype=np.int32) % num_classes
  medjax_fn, flops = _medjax_step(config, num_classes, images, labels)
  model = torch_irma(variant, num_classes, 128).train().to(timing.peer_device())
  peer_fn = _torch_step(model, F.cross_entropy, _sgd(model, config.optimizer), _nchw(images),
                        _labels(labels), config.steps_per_call, compute_dtype)
  return _compare(f"train_step/irma_{variant}_128_b{batch}{timing.suffix(compute_dtype)}",
                  config.steps_per_call, batch,
                  medjax_fn, peer_fn, repeats, flops)


class TorchCAE(nn.Module):
  """medjax.features.cae: tied 3x3 encoder/decoder, max-pool/unpool at the arg-max."""

  def __init__(self, channels: int, filters: int):
    super().__init__()
    self.w = nn.Parameter(torch.empty(filters, channels, 3, 3))
    nn.init.xavier_uniform_(self.w)
    self.b_enc = nn.Parameter(torch.zeros(filters))
    self.b_dec = nn.Parameter(torch.zeros(channels))

  def forward(self, x):
    h = F.relu(F.conv2d(x, self.w, self.b_enc, padding=1))
    pooled, index = F.max_pool2d(h, 2, return_indices=True)
    maps = F.max_unpool2d(pooled, index, 2, output_size=h.shape[-2:])
    return F.relu(F.conv_transpose2d(maps, self.w, self.b_dec, padding=1))


def cae_case(batch: int, filters: int, repeats: int, side: int = 6, channels: int = 256,
             compute_dtype: str = "float32") -> dict:
  # Post-ReLU conv5 features are non-negative; uniform [0, 1) stands in for them.
  x = _images(batch, side, channels)
  steps = cae_imageclef16.get_config().cae.steps_per_call
  optimizer = optax.sgd(1e-5)
  holder = {"params": cae.init(jax.random.PRNGKey(0), channels, filters)}
  holder["opt_state"] = optimizer.init(holder["params"])
  batches = (jax.device_put(x),) * steps
  train_steps = functools.partial(cae.train_steps, optimizer=optimizer,
                                  compute_dtype=compute_dtype)
  flops = timing.accelerator_flops(train_steps, holder["params"], holder["opt_state"], batches)

  def medjax_fn():
    holder["params"], holder["opt_state"], values = train_steps(
        holder["params"], holder["opt_state"], batches)
    return values

  model = TorchCAE(channels, filters).to(timing.peer_device())
  loss_fn = lambda y, target: 0.5 * torch.sum((y - target) ** 2) / target.shape[0]
  torch_x = _nchw(x)
  peer_fn = _torch_step(model, loss_fn, torch.optim.SGD(model.parameters(), lr=1e-5), torch_x,
                        torch_x, steps, compute_dtype)
  name = f"train_step/cae_{side}x{side}x{channels}_f{filters}_b{batch}"
  return _compare(f"{name}{timing.suffix(compute_dtype)}", steps, batch,
                  medjax_fn, peer_fn, repeats, flops)


def cases(quick: bool) -> list[timing.Case]:
  """Paper sizes; ``quick`` times one call per side."""
  repeats = 1 if quick else 3
  return [
      timing.Case("train_step/lenet_ova", lambda: lenet_case(20, 256, repeats)),
      timing.Case("train_step/alexnet_anatomy", lambda: alexnet_case(64, repeats)),
      timing.Case("train_step/alexnet_anatomy_bf16",
                  timing.needs_bf16_units(lambda: alexnet_case(64, repeats, compute_dtype="bfloat16"))),
      timing.Case("train_step/alexnet_caffe", lambda: alexnet_case(64, repeats, "alexnet", 2)),
      timing.Case("train_step/irma_C", lambda: irma_case(256, repeats)),
      timing.Case("train_step/irma_C_bf16",
                  timing.needs_bf16_units(lambda: irma_case(256, repeats, compute_dtype="bfloat16"))),
      timing.Case("train_step/cae", lambda: cae_case(512, 4096, repeats)),
      timing.Case("train_step/cae_bf16",
                  timing.needs_bf16_units(lambda: cae_case(512, 4096, repeats, compute_dtype="bfloat16"))),
  ]
