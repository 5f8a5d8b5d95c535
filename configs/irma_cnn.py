r"""System 4: small VGG-style CNNs A-G on IRMA X-rays (ElMarakbey et al.).

Paper: 128x128 grayscale, CLAHE, training-mean-image subtraction; configurations A-G
(see medjax/models/irma_cnn.py for how the garbled tables were read); SGD momentum 0.9,
batch 256, L2 5e-4, dropout 0.5 after the first two FCs, augmentation by 90/180/270
degree rotation and random crop; 10 % of train held out for early stopping. The paper
gives no learning rate or epoch budget beyond "1000-2000 epochs" with early stopping: we
use lr 0.01 and up to 200 epochs with patience 20 on validation accuracy. The random crop
is a 128 crop of the image zero-padded by 8 pixels (after mean subtraction), our reading
of "random cropping".

Headline settings. ``dropout`` and ``augment`` default to ``paper``: the setting of the
variant's number in Table 4, read from Tables 5-7. A 43.1 % has neither; B 92.03 %,
C 92.69 % and D 89.28 % have dropout and no augmentation (Table 6 reports no augmented run
of them); E 88.38 %, F 89.15 % and G 90.38 % have both (Table 7). So 92.69 % is C with
dropout and *without* augmentation, the default ``variant=C``. ``true``/``false`` set
either explicitly (the ablation of Tables 5-7; ``sweep()`` below).

Classes. A-D use the paper's five regions. E-G were trained on 3 and 4 classes (Table 3:
"FC-classes(3,4)"): ``classes=3`` or ``classes=4`` selects ``irma/anatomy3`` or
``irma/anatomy4`` (which regions: medjax/data/builders/irma.py), so compare E-G's numbers
only with runs at those. The paper does not say which of E-G used which.

  python -m medjax.main --config=configs/irma_cnn.py:variant=C --workdir=workdirs/irma_C
  python -m medjax.main --config=configs/irma_cnn.py:variant=G,classes=4 --workdir=workdirs/irma_G4
  python -m medjax.main --config=configs/irma_cnn.py:smoke,dataset=chest_xray,variant=C \
      --workdir=/tmp/irma_smoke
  # Dropout x augmentation for C (Tables 5-7), one workdir per point, ROOT/summary.{md,csv}:
  python -m launch.sweep --config=configs/irma_cnn.py --filter=variant=C, --workdir=workdirs/irma_C_ablation
"""
from configs import common

# variant -> (dropout, augmentation) of its number in the paper's Table 4.
HEADLINE = {"A": (False, False), "B": (True, False), "C": (True, False), "D": (True, False),
            "E": (True, True), "F": (True, True), "G": (True, True)}
CLASSES = {5: "irma", 3: "irma/anatomy3", 4: "irma/anatomy4"}


def _switch(name: str, value: str, paper: bool) -> bool:
  if value == "paper":
    return paper
  if value.lower() not in ("true", "false", "1", "0"):
    raise ValueError(f"config argument {name}={value!r}: expected paper, true or false")
  return value.lower() in ("true", "1")


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, dataset="irma", variant="C", dropout="paper",
                         augment="paper", classes=5, seed=0, seeds=1, image_size=128,
                         epochs=200)
  if arg.variant not in HEADLINE:
    raise ValueError(f"variant={arg.variant!r}; expected one of {sorted(HEADLINE)}")
  if arg.classes not in CLASSES or (arg.classes != 5 and arg.dataset != "irma"):
    raise ValueError(f"classes={arg.classes}: 3, 4 or 5 IRMA regions (dataset=irma only)")
  dropout = _switch("dropout", arg.dropout, HEADLINE[arg.variant][0])
  augment = _switch("augment", arg.augment, HEADLINE[arg.variant][1])
  config = common.supervised(seed=arg.seed)
  config.num_seeds = arg.seeds
  dataset = CLASSES[arg.classes] if arg.dataset == "irma" else arg.dataset
  config.data = common.data_for(dataset, val_fraction=0.1)
  size = arg.image_size
  base = f"decode(1)|resize({size})|clahe"
  config.pp_eval = f"{base}|subtract_mean"
  augmentation = f"|random_rot90|random_crop({size}, pad={size // 16})" if augment else ""
  config.pp_train = config.pp_eval + augmentation
  config.model = {"name": "irma_cnn", "variant": arg.variant, "use_dropout": dropout,
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
  """The paper's ablations (Tables 5-7) over every variant: A-G, each with and without
  dropout and augmentation, as ``:ARGS`` that ``launch.sweep`` appends to the config's own
  (``--filter=variant=C,`` keeps C's four points)."""
  return [f"variant={v},dropout={d},augment={a}" for v in "ABCDEFG"
          for d in ("true", "false") for a in ("true", "false")]
