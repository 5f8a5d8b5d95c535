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
      values[key] = kind(raw)
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
      "cache": True,           # Keep encoded records in memory after the first epoch.
      "shuffle_buffer": 20_000,
      "on_bad_file": "fail",   # or "skip" (counted as data/skipped in results.json).
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
      "log_every": 50,
      "checkpoint_every_steps": 500,
      "keep_checkpoints": 2,
      "eval_every_epochs": 1,
      "early_stopping": {"metric": "", "mode": "max", "patience_epochs": 0},
      # Index the training split's pre_logits and score test queries (retrieval/mAP ...).
      "retrieval": True,
  })


def smoke(config: mlc.ConfigDict, steps: int = 12, batch_size: int = 16) -> None:
  """Shrinks a config to a run of well under two minutes on 2 CPU cores (real data)."""
  config.total_steps = steps
  config.batch_size = batch_size
  config.eval_batch_size = 64
  config.log_every = 4
  config.checkpoint_every_steps = 4
  config.data.test_split = config.data.test_split + "[:128]" if config.data.test_split else ""
