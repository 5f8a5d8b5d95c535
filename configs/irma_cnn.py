r"""System 4: small VGG-style CNNs A-G on IRMA X-rays (ElMarakbey et al.).

Paper: 128x128 grayscale, CLAHE, training-mean-image subtraction; configurations A-G
(see medjax/models/irma_cnn.py for how the garbled tables were read); SGD momentum 0.9,
batch 256, L2 5e-4, dropout 0.5 after the first two FCs, augmentation by 90/180/270
degree rotation and random crop; 10 % of train held out for early stopping. The paper
gives no learning rate or epoch budget beyond "1000-2000 epochs" with early stopping: we
use lr 0.01 and up to 200 epochs with patience 20 on validation accuracy. The random crop
is a 128 crop of the image zero-padded by 8 pixels (after mean subtraction), our reading
of "random cropping".

  python -m medjax.main --config=configs/irma_cnn.py:variant=C --workdir=workdirs/irma_C
  python -m medjax.main --config=configs/irma_cnn.py:smoke,dataset=chest_xray,variant=C \
      --workdir=/tmp/irma_smoke
  # Ablations (paper Tables 5-6): dropout / augmentation off
  python -m medjax.main --config=configs/irma_cnn.py:variant=E,dropout=false,augment=false ...
  # All of them, one workdir per point, and ROOT/summary.{md,csv} (see sweep() below)
  python -m launch.sweep --config=configs/irma_cnn.py --workdir=workdirs/irma_sweep
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, dataset="irma", variant="C", dropout=True,
                         augment=True, seed=0, seeds=1, image_size=128, epochs=200)
  config = common.supervised(seed=arg.seed)
  config.num_seeds = arg.seeds
  config.data = common.data_for(arg.dataset, val_fraction=0.1)
  size = arg.image_size
  base = f"decode(1)|resize({size})|clahe"
  config.pp_eval = f"{base}|subtract_mean"
  augment = f"|random_rot90|random_crop({size}, pad={size // 16})" if arg.augment else ""
  config.pp_train = config.pp_eval + augment
  config.model = {"name": "irma_cnn", "variant": arg.variant, "use_dropout": arg.dropout,
                  "dropout": 0.5}
  config.loss = "softmax_xent"
  config.batch_size = 256
  config.eval_batch_size = 256
  config.num_epochs = arg.epochs
  config.optimizer = common.sgd(0.01, momentum=0.9, weight_decay=5e-4)
  config.early_stopping = {"metric": "accuracy", "mode": "max", "patience_epochs": 20}
  if arg.smoke:
    common.smoke(config, steps=12, batch_size=32)
  return config


def sweep():
  """The paper's ablations (Tables 5-6) over every variant: A-G, each with and without
  dropout and augmentation, as ``:ARGS`` that ``launch.sweep`` appends to the config's own."""
  return [f"variant={v},dropout={d},augment={a}" for v in "ABCDEFG"
          for d in ("true", "false") for a in ("true", "false")]
