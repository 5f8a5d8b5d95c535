"""Checks a supervised config before anything expensive starts, naming the offending key.

ml_collections already refuses unknown keys and wrong types given on the command line
(``--config.KEY=VALUE`` on a locked config); this catches values that are well-typed but
impossible, so that a typo does not surface an hour into a run.
"""
from medjax import cli
from medjax.data import builders, ops
from medjax.kernels import precision
from medjax.models import registry

LOSSES = ("softmax_xent", "sigmoid_xent", "auto")  # auto: by the data, losses.resolve.
SCHEDULES = ("constant", "step", "plateau", "warmup_cosine")
OPTIMIZERS = ("sgd", "adamw")
SINGLE_LABEL_METRICS = ("accuracy", "balanced_accuracy", "loss")
MULTI_LABEL_METRICS = ("exact_match", "any_match", "hamming_similarity", "loss")


class ConfigError(cli.UserError, ValueError):
  """An impossible config value; the message names the key."""


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def check(config) -> None:
  """Raises ``ValueError`` naming the first impossible key of ``config``."""
  _require(config.loss in LOSSES, f"config.loss={config.loss!r}; expected one of {LOSSES}")
  _require(config.optimizer.schedule in SCHEDULES,
           f"config.optimizer.schedule={config.optimizer.schedule!r}; expected one of {SCHEDULES}")
  opt = config.optimizer
  _require(opt.get("name", "sgd") in OPTIMIZERS,
           f"config.optimizer.name={opt.get('name')!r}; expected one of {OPTIMIZERS}")
  _require(0.0 <= opt.get("ema_decay", 0.0) < 1.0,
           f"config.optimizer.ema_decay={opt.get('ema_decay')}; expected 0 <= d < 1")
  if opt.schedule == "warmup_cosine":
    _require(opt.total_epochs > 0 and opt.warmup_epochs >= 0,
             f"config.optimizer: warmup_cosine needs total_epochs > 0 and warmup_epochs >= 0 "
             f"(got {opt.total_epochs}, {opt.warmup_epochs})")
  for i, group in enumerate(opt.get("groups", ()) or ()):
    _require(len(group) == 2 and isinstance(group[0], str) and group[1] >= 0,
             f"config.optimizer.groups[{i}]={group!r}; expected (regex, multiplier >= 0)")
  _require(config.get("class_balance", "") in ("", "loss"),
           f"config.class_balance={config.get('class_balance')!r}; expected '' or 'loss'")
  _require(0.0 <= config.get("label_smoothing", 0.0) < 1.0,
           f"config.label_smoothing={config.get('label_smoothing')}; expected 0 <= s < 1")
  _require(config.get("compute_dtype", "float32") in precision.DTYPES,
           f"config.compute_dtype={config.get('compute_dtype')!r}; expected one of "
           f"{sorted(precision.DTYPES)}")
  _require(1 <= config.get("tta", 1) <= 6, f"config.tta={config.get('tta')}; expected 1 to 6 views")
  for key in ("batch_size", "eval_batch_size", "log_every", "checkpoint_every_steps",
              "eval_every_epochs", "keep_checkpoints", "steps_per_call"):
    _require(config[key] >= 1, f"config.{key}={config[key]} must be at least 1")
  _require(config.total_steps > 0 or config.num_epochs > 0,
           "config.num_epochs (or config.total_steps) must be positive")
  _require(config.optimizer.learning_rate >= 0,
           f"config.optimizer.learning_rate={config.optimizer.learning_rate} is negative")
  _require(0.0 <= config.data.val_fraction < 1.0,
           f"config.data.val_fraction={config.data.val_fraction}; expected 0 <= f < 1")
  _require(config.data.on_bad_file in ("fail", "skip"),
           f"config.data.on_bad_file={config.data.on_bad_file!r}; expected 'fail' or 'skip'")
  base_dataset = config.data.name.partition("/")[0]
  _require(base_dataset in builders.names() or builders.is_path(config.data.name),
           f"config.data.name={config.data.name!r} is neither a known dataset "
           f"{builders.names()} nor a folder or CSV path")
  _require(config.model.name in registry.names(),
           f"config.model.name={config.model.name!r} is not a known model; known: {registry.names()}")
  for key in ("pp_train", "pp_eval"):
    for spec in filter(None, (s.strip() for s in config[key].split("|"))):
      try:
        ops.parse(spec)
      except ValueError as e:
        raise ValueError(f"config.{key}: {e}") from None
  metric = config.early_stopping.metric
  if metric:
    allowed = {"sigmoid_xent": MULTI_LABEL_METRICS, "softmax_xent": SINGLE_LABEL_METRICS
               }.get(config.loss, ("loss",))
    _require(metric in allowed,
             f"config.early_stopping.metric={metric!r} is not a {config.loss} metric; "
             f"expected one of {allowed}" if config.loss in LOSSES[:2] else
             f"config.early_stopping.metric={metric!r} with config.loss='auto': only 'loss' "
             f"is defined for both label kinds; name the loss to stop on {metric!r}")
    _require(config.early_stopping.mode in ("max", "min"),
             f"config.early_stopping.mode={config.early_stopping.mode!r}; expected 'max' or 'min'")


def check_against_data(config, info) -> None:
  """Checks that need the dataset: label kind vs loss and metrics, batch vs split size."""
  _require(not (config.loss == "softmax_xent" and info.multi_label),
           f"config.loss='softmax_xent' cannot train the multi-label dataset {info.name!r}; "
           f"use 'sigmoid_xent' (or 'auto', which follows the data)")
  metric = config.early_stopping.metric
  _require(not (metric in ("exact_match", "any_match", "hamming_similarity")
                and not info.multi_label and config.loss != "sigmoid_xent"),
           f"config.early_stopping.metric={metric!r} is a multi-label metric but dataset "
           f"{info.name!r} is single-label")
  _require(config.batch_size <= info.split_sizes["train"],
           f"config.batch_size={config.batch_size} exceeds the {info.split_sizes['train']} "
           f"training examples of {info.name!r}")
