"""Pieces shared by the system configs, as functions (no config imports another's fields).

``parse_arg("smoke,dataset=chest_xray,variant=C", smoke=False, dataset="irma", variant="C")``
turns the ``:ARGS`` suffix of ``--config=configs/NAME.py:ARGS`` into typed values, as
big_vision's ``parse_arg``: bare words are booleans, ``key=value`` pairs are cast to the
default's type.
"""
import ml_collections as mlc


def parse_arg(arg: str | None, **defaults) -> mlc.ConfigDict:
  values = dict(defaults)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, _, raw = item.partition("=")
    if key not in defaults:
      raise ValueError(f"config argument {key!r} is unknown; known: {sorted(defaults)}")
    kind = type(defaults[key])
    if not raw:
      if kind is not bool:
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      values[key] = True
    elif kind is bool:
      if raw.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key}={raw!r}: expected true or false")
      values[key] = raw.lower() in ("true", "1")
    elif defaults[key] is None:
      values[key] = raw
    else:
      try:
        values[key] = kind(raw)
      except ValueError:
        expected = {int: "an integer", float: "a number"}.get(kind, f"a {kind.__name__}")
        raise ValueError(f"config argument {key}={raw}: expected {expected}") from None
  return mlc.ConfigDict(values)


def data(name: str, **overrides) -> mlc.ConfigDict:
  """Dataset selection and reading options (``config.data``)."""
  cfg = mlc.ConfigDict({
      "name": name,
      "manual_dir": mlc.config_dict.placeholder(str),  # None -> $MEDJAX_DATA_DIR -> ~/medjax_data.
      "tfds_dir": mlc.config_dict.placeholder(str),    # None -> $MEDJAX_TFDS_DIR -> ~/tensorflow_datasets.
      "train_split": "train",
      "val_split": "",
      "test_split": "test",
      "val_fraction": 0.0,     # > 0: carve a stratified validation set from train_split.
      # A dataset given by path without splits (a <class>/<image> folder, a CSV without a
      # split column) is split train/val/test by these fractions, stratified, from
      # split_seed (not the run's seed: every seed of a study sees the same test set).
      "split_fractions": (0.7, 0.1, 0.2),
      "split_seed": 0,
      # Keep in memory after the first pass: "preprocessed" (the output of the ops before
      # the first random one: decode, resize, CLAHE ...), "encoded" (the raw records), or "".
      "cache": "preprocessed",
      "shuffle_buffer": 20_000,
      "on_bad_file": "fail",   # or "skip" (counted as data/skipped in results.json).
      "graded": False,         # Classes are ordered grades: also report quadratic kappa.
  })
  cfg.update(overrides)
  return cfg


# The paper-faithful splits of each dataset when used for supervised training.
DATASET_SPLITS = {
    # Kermany: the public val has 16 images; the papers train on train+val and test on test.
    "chest_xray": {"train_split": "train+val", "test_split": "test"},
}


def data_for(name: str, **overrides) -> mlc.ConfigDict:
  return data(name, **{**DATASET_SPLITS.get(name, {}), **overrides})


def sgd(learning_rate: float, momentum: float = 0.9, weight_decay: float = 0.0,
        schedule: str = "constant", **overrides) -> mlc.ConfigDict:
  cfg = mlc.ConfigDict({
      "learning_rate": learning_rate,
      "momentum": momentum,
      "nesterov": False,
      "weight_decay": weight_decay,
      "schedule": schedule,   # constant | step | plateau
      "step_epochs": 30,      # step: multiply by step_gamma every step_epochs epochs.
      "step_gamma": 0.1,
      "plateau_factor": 0.1,  # plateau: multiply by this when the epoch loss stalls ...
      "plateau_patience": 5,  # ... for this many epochs,
      "plateau_rtol": 1e-4,   # by less than this relative change,
      "plateau_min_scale": 1e-6,
  })
  cfg.update(overrides)
  return cfg


def supervised(*, seed: int = 0) -> mlc.ConfigDict:
  """Fields every supervised config has; system configs fill in model, data and pp."""
  return mlc.ConfigDict({
      "pipeline": "supervised",
      "seed": seed,
      "loss": "softmax_xent",
      "batch_size": 256,
      "eval_batch_size": 256,
      "num_epochs": 30,
      "total_steps": 0,            # > 0 overrides num_epochs (smoke runs).
      # Train steps run in one compiled call (Keras's steps_per_execution): on CPU they
      # share one allocation of the step's temporaries (medjax.train.step.make_train_steps).
      # Results are those of one step per call.
      "steps_per_call": 4,
      # "bfloat16": mixed precision (medjax.kernels.precision); parameters stay float32.
      "compute_dtype": "float32",
      "log_every": 50,
      "checkpoint_every_steps": 500,
      "keep_checkpoints": 2,
      "eval_every_epochs": 1,
      "early_stopping": {"metric": "", "mode": "max", "patience_epochs": 0},
      # Index the training split's pre_logits and score test queries (retrieval/mAP ...).
      "retrieval": True,
      # > 1: run seeds seed .. seed + num_seeds - 1 and report each metric's mean and std.
      "num_seeds": 1,
  })


def first_examples(split: str, n: int) -> str:
  """``"train+val"`` -> ``"train[:n]+val"``: TFDS slicing of the first (main) part only,
  since slicing a part smaller than ``n`` is an error."""
  if not split:
    return ""
  first, *rest = split.split("+")
  return "+".join([f"{first}[:{n}]", *rest])


def smoke(config: mlc.ConfigDict, steps: int = 12, batch_size: int = 16) -> None:
  """Shrinks a config to a run of well under two minutes on 2 CPU cores (real data).

  Training, statistics (mean image) and the retrieval index use the first 768 examples
  of the training split; evaluation the first 128 test examples.
  """
  config.total_steps = steps
  config.batch_size = batch_size
  config.eval_batch_size = 64
  config.log_every = 4
  config.checkpoint_every_steps = 4
  config.data.train_split = first_examples(config.data.train_split, 768)
  config.data.test_split = first_examples(config.data.test_split, 128)


# The conv map each backbone's frozen-feature pipelines aggregate by default: VGG19's
# block5_pool (paper 5), AlexNet's pooled last conv stage, 6x6x256 (paper 3), and the
# 7x7x1280 head of the offline default EfficientNet-Lite0.
CONV_MAPS = {"vgg19": "block5_pool", "alexnet": "pool5", "alexnet_torchvision": "pool5",
             "efficientnet_lite0": "head", "squeezenet1_1": "fire9",
             "googlenet": "inception5b"}


def frozen_features(*, dataset: str, backbone: str, aggregation: str, scale: int,
                    seed: int, seeds: int = 1) -> mlc.ConfigDict:
  """Fields every frozen-feature config has (systems 3 and 5); each system's config adds
  its aggregations' hyper-parameters (``configs/vlad.py``: ``vlad``;
  ``configs/cae_imageclef16.py``: ``cae``, ``baseline``, ``ssae``).

  ``scale`` 0 means the backbone's own input size (resolved after any fallback).
  """
  return mlc.ConfigDict({
      "pipeline": "frozen_features",
      "seed": seed,
      # > 1: run seeds seed .. seed + num_seeds - 1 (k-means, CAE, SSAE, ICA and dictionary
      # initialisations; the features are extracted once for all) and report mean and std.
      "num_seeds": seeds,
      "data": data_for(dataset),
      "pp_eval": "",  # Unused: extraction builds its pp from the backbone spec and the scale.
      "backbone": {
          "name": backbone,
          "weights": mlc.config_dict.placeholder(str),  # None: the spec's default file.
          # A finished fine-tuning workdir (configs/finetune.py): its network, not ImageNet's.
          "from_workdir": mlc.config_dict.placeholder(str),
          "layer": CONV_MAPS[backbone],
          # Used, loudly, when the weights above are not available.
          "fallback": "efficientnet_lite0",
          "fallback_layer": CONV_MAPS["efficientnet_lite0"],
      },
      # Where feature chunks go (default <workdir>/features); runs may share one folder,
      # features are reused only for the identical backbone, layer, pp and split.
      "features_dir": mlc.config_dict.placeholder(str),
      "features": {"scales": (scale,), "batch_size": 32, "chunk_batches": 8},
      # "bfloat16": the backbone runs in bfloat16, features are stored as float32.
      "compute_dtype": "float32",
      "aggregation": aggregation,
      "svm": {"C": 1.0, "learning_rate": mlc.config_dict.placeholder(float),
              "max_iter": 1000, "tol": 1e-5},
  })


def smoke_frozen_features(config: mlc.ConfigDict) -> None:
  """Shrinks the shared part of a frozen-feature config for a smoke run (real data): the
  first 256 training and 128 test examples; each system's config shrinks its own budgets."""
  config.data.train_split = first_examples(config.data.train_split, 256)
  config.data.test_split = first_examples(config.data.test_split, 128)
