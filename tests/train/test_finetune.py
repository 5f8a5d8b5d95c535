"""Transfer learning through the one trainer (configs/finetune.py): ImageNet initialisation,
frozen parts, optimiser groups and EMA, losses, and the dead-run warning."""
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from configs import finetune
from medjax import parallel
from medjax.weights import load
from medjax import optim
from medjax.train import losses, transfer, trainer
from medjax.train.step import build_model, init_state, make_train_steps
from tests.compare import numpy_uniform
from tests.conftest import tiny_config

SIZE = 64  # Small inputs: EfficientNet-Lite0's weights do not depend on the input size.


def _lite0_config(mode: str):
  config = finetune.get_config(f"mode={mode},image_size={SIZE},train_size={SIZE}")
  return config


def _state_with_imagenet(config, num_classes=2):
  mesh = parallel.make_mesh()
  model = build_model(config, num_classes)
  tx = optim.make(config.optimizer, steps_per_epoch=10)
  return model, tx, transfer.pretrained_state(model, tx, config, (SIZE, SIZE, 3), mesh)


@pytest.fixture(scope="module")
def probe():
  return _state_with_imagenet(_lite0_config("linear_probe"))


@pytest.mark.slow
def test_starts_from_the_imported_imagenet_weights(probe):
  model, _, state = probe
  frozen, variables, _ = load.load_backbone("efficientnet_lite0", include_top=False)
  images = numpy_uniform(0, (2, SIZE, SIZE, 3), -1.0, 1.0)
  _, ours = jax.jit(functools.partial(model.apply, train=False))(
      {"params": state.params, **state.model_state}, images)
  _, theirs = jax.jit(functools.partial(frozen.apply, train=False))(variables, images)
  np.testing.assert_array_equal(np.asarray(ours["pre_logits"]), np.asarray(theirs["pre_logits"]))
  # The classifier is new: two classes, freshly initialised, and only it was drawn: its
  # values are the ones the whole initialisation gives it.
  assert state.params["fc"]["kernel"].shape == (1280, 2)
  config = _lite0_config("linear_probe")
  fc = init_state(model, probe[1], config, (SIZE, SIZE, 3), parallel.make_mesh(),
                  select=lambda s: s.params["fc"])
  jax.tree.map(np.testing.assert_array_equal, state.params["fc"], fc)
  # The optimiser state is initialised around the imported weights.
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, probe[1].init(state.params))


@pytest.mark.slow
def test_linear_probe_keeps_the_backbone_bit_identical(probe):
  model, tx, state = probe
  before = jax.tree.map(np.array, {"params": state.params, **state.model_state})
  steps = make_train_steps(model, tx, losses.make(_lite0_config("linear_probe"), [3, 5]))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (4, SIZE, SIZE, 3)), jnp.float32),
           "label": jnp.asarray([0, 1, 1, 0])}
  state, _ = steps(state, (batch, batch))
  after = jax.tree.map(np.array, {"params": state.params, **state.model_state})
  for path, old in jax.tree_util.tree_leaves_with_path(before):
    new = after
    for key in path:
      new = new[key.key]
    if path[1].key == "fc":
      assert not np.array_equal(old, new), "the classifier did not train"
    else:
      np.testing.assert_array_equal(old, new, err_msg=jax.tree_util.keystr(path))


def test_finetune_groups_freeze_the_early_stages_only():
  config = _lite0_config("finetune")
  params = {"stem_conv": {"kernel": 0}, "block1": {"x": 0}, "block14": {"x": 0},
            "block15": {"x": 0}, "head_conv": {"kernel": 0}, "fc": {"kernel": 0}}
  labels = optim.group_labels(config.optimizer.groups, params)
  mult = {str(i): m for i, (_, m) in enumerate(config.optimizer.groups)}
  mult[str(len(config.optimizer.groups))] = 1.0
  got = {k: mult[v["kernel" if "kernel" in v else "x"]] for k, v in labels.items()}
  # Stages 1-6 (blocks 0-14) frozen; "block1/" must not match block14 or block15.
  assert got == {"stem_conv": 0.0, "block1": 0.0, "block14": 0.0, "block15": 1.0,
                 "head_conv": 1.0, "fc": 10.0}


def _opt(**kw):
  base = dict(learning_rate=1.0, momentum=0.0, nesterov=False, weight_decay=0.0,
              schedule="constant", name="sgd", ema_decay=0.0, groups=(),
              warmup_epochs=1, total_epochs=4, final_scale=0.0)
  return ConfigDict({**base, **kw})


def test_ema_tracks_the_updated_parameters_and_is_evaluated():
  cfg = _opt(ema_decay=0.5)
  tx = optim.make(cfg, 1)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  updates, state = tx.update({"w": jnp.ones(3)}, state, params, value=0.0)
  np.testing.assert_allclose(updates["w"], -1.0)
  np.testing.assert_allclose(state[-1].ema["w"], 0.5 * 1 + 0.5 * 0.0)
  holder = type("S", (), {"opt_state": state, "params": params})
  assert optim.eval_params(cfg, holder) is state[-1].ema
  assert optim.eval_params(_opt(), holder) is params


def test_warmup_cosine_and_adamw_decay_kernels_only():
  cfg = _opt(schedule="warmup_cosine", name="adamw", weight_decay=0.1)
  lrs = [float(optim.learning_rate_schedule(cfg, 10)(s)) for s in (0, 5, 10, 25, 40)]
  np.testing.assert_allclose(lrs, [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  tx = optim.make(_opt(name="adamw", weight_decay=0.1), 1)
  params = {"k": jnp.ones((2, 2)), "b": jnp.ones(2)}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["k"], -0.1)
  np.testing.assert_allclose(updates["b"], 0.0)


def test_smoothed_class_balanced_loss_and_its_constant_predictor_floor():
  config = ConfigDict({"loss": "softmax_xent", "label_smoothing": 0.1, "class_balance": "loss"})
  loss = losses.make(config, [1, 3])
  np.testing.assert_allclose(loss.class_weights, [2.0, 2 / 3])
  logits = jnp.zeros((2, 2))
  per = losses.loss_fn(loss, logits, jnp.array([0, 1]))
  np.testing.assert_allclose(per, np.log(2) * np.array([2.0, 2 / 3]), rtol=1e-6)
  assert losses.constant_predictor_loss(loss, [1, 3]) == pytest.approx(np.log(2))
  assert losses.constant_predictor_loss("softmax_xent", [1, 3]) == pytest.approx(
      -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)))
  plain = ConfigDict({"loss": "softmax_xent", "label_smoothing": 0.0, "class_balance": ""})
  assert losses.make(plain, [1, 3]) == "softmax_xent"


def test_one_vs_all_loss_smoothed_and_weighted_per_label_and_its_floor():
  """Positives of a label in 1 of 4 examples weigh n / (2 n_pos) = 2, its negatives 2/3;
  smoothing pulls targets toward 1/2; a constant predictor scores each label's entropy."""
  config = ConfigDict({"loss": "sigmoid_xent", "label_smoothing": 0.2, "class_balance": "loss"})
  loss = losses.make(config, [1, 2], num_examples=4)
  assert isinstance(loss, losses.WeightedSigmoid)
  np.testing.assert_allclose(loss.weights, [[2.0, 1.0], [2 / 3, 1.0]])
  labels = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  per = losses.loss_fn(loss, jnp.zeros((2, 2)), labels)
  np.testing.assert_allclose(per, np.log(2) * np.array([2.0 + 1.0, 2 / 3 + 1.0]), rtol=1e-6)
  logits = jnp.array([[3.0, -3.0]])
  smoothed = losses.loss_fn(losses.make(ConfigDict({**config, "class_balance": ""}), [1, 2], 4),
                            logits, labels[:1])
  t = np.array([0.9, 0.1])
  want = -(t * np.log(jax.nn.sigmoid(np.array([3.0, -3.0])))
           + (1 - t) * np.log(1 - jax.nn.sigmoid(np.array([3.0, -3.0])))).sum()
  np.testing.assert_allclose(smoothed, [want], rtol=1e-5)
  assert losses.constant_predictor_loss(loss, [1, 2], 4) == pytest.approx(2 * np.log(2))
  h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))
  assert losses.constant_predictor_loss("sigmoid_xent", [1, 2], 4) == pytest.approx(
      h(0.25) + h(0.5))
  # Single-label data under one-vs-all heads: each class is a label, counts of all examples.
  assert losses.constant_predictor_loss("sigmoid_xent", [1, 3]) == pytest.approx(
      2 * h(0.25))
  assert losses.resolve("auto", True) == "sigmoid_xent"
  assert losses.resolve("auto", False) == losses.resolve("softmax_xent", True) == "softmax_xent"


def test_dead_run_monitor_warns_once_on_a_flat_loss_or_collapsed_predictions(caplog):
  monitor = transfer.DeadRunMonitor("softmax_xent", [50, 50])
  monitor.add([0.3, 0.2])
  assert monitor.end_epoch(1, np.array([0, 1, 1])) is None  # Learning.
  monitor.add([0.2])
  message = monitor.end_epoch(2, np.array([1, 1, 1]))
  assert "predicts class 1 for every validation image" in message
  assert "learning_rate" in message
  monitor.add([0.7, 0.69])
  assert monitor.end_epoch(3) is None  # Once per run.
  flat = transfer.DeadRunMonitor("softmax_xent", [50, 50])
  flat.add([0.693, 0.70])
  with caplog.at_level(logging.WARNING):
    assert "DEAD RUN" in flat.end_epoch(1)
  assert "class prior" in caplog.text


@pytest.mark.slow
def test_a_run_that_cannot_learn_is_flagged(tiny_data_dir, tfds_dir, tmp_path, caplog):
  """Learning rate 0: the loss stays at the prior's entropy for the epoch."""
  config = tiny_config(tiny_data_dir, tfds_dir, num_epochs=1,
                       **{"optimizer.learning_rate": 0.0, "retrieval": False})
  with caplog.at_level(logging.WARNING):
    results = trainer.train_and_evaluate(config, tmp_path)
  assert results["train/dead_run_warning"] is True
  assert caplog.text.count("DEAD RUN") == 1


def test_tta_views_start_with_the_image_and_keep_its_shape():
  images = numpy_uniform(1, (2, 16, 16, 3))
  views = transfer.tta_views(images, 3)
  assert len(views) == 3 and all(v.shape == images.shape for v in views)
  np.testing.assert_array_equal(views[0], images)
  assert not np.allclose(views[1], images)


def test_smoke_config_and_bad_values_are_named():
  config = finetune.get_config("smoke")
  assert config.total_steps == 2 and config.init.pretrained and config.data.val_fraction == 0.1
  assert "random_flip" not in config.pp_train  # Laterality matters.
  with pytest.raises(ValueError, match="mode='probe'"):
    finetune.get_config("mode=probe")


@pytest.mark.slow
def test_smoke_run_of_the_finetune_config(tiny_data_dir, tfds_dir, tmp_path):
  config = finetune.get_config(f"smoke,dataset=image_folder,image_size={SIZE},train_size=48")
  config.data.manual_dir = str(tiny_data_dir)
  config.data.tfds_dir = str(tfds_dir)
  config.data.train_split, config.data.test_split = "train", "test"
  results = trainer.train_and_evaluate(config, tmp_path)
  assert results["train/steps"] == 2 and results["calibration/temperature"] > 0
  assert results["test/num_examples"] == 16 and 0 <= results["test/roc_auc"] <= 1
  assert (tmp_path / "report.html").exists() and (tmp_path / "predictions" / "val.csv").exists()
  # Paper 3's arms: the fine-tuned network's features + SVM, then both runs ensembled.
  from configs import vlad
  from medjax import ensemble
  from medjax.features import pipeline as frozen
  from tests.conftest import set_dotted
  svm_config = set_dotted(vlad.get_config(f"dataset=image_folder,aggregation=avgpool,scale={SIZE}"),
                          {"data.manual_dir": str(tiny_data_dir), "data.tfds_dir": str(tfds_dir),
                           "features.batch_size": 8, "backbone.from_workdir": str(tmp_path)})
  svm = frozen.train_and_evaluate(svm_config, tmp_path / "svm")
  assert svm["test/num_examples"] == 16 and "test/roc_auc" in svm
  assert (tmp_path / "svm" / "report.html").exists()
  both = ensemble.ensemble([tmp_path, tmp_path / "svm"], tmp_path / "ens")
  assert both["test/num_examples"] == 16 and set(both) >= {"test/roc_auc", "test/accuracy"}


def test_operating_point_is_chosen_on_validation_and_applied_to_test():
  val = np.array([[0.9, 0.1], [0.5, 0.5], [0.3, 0.7], [0.1, 0.9]])
  point = transfer.operating_point(val, [0, 0, 1, 1], np.array([[0.4, 0.6], [0.2, 0.8]]), [0, 1])
  assert point["threshold"] == 0.7  # The lowest threshold separating val perfectly.
  assert point["accuracy"] == 1.0 and point["sensitivity"] == 1.0 and point["specificity"] == 1.0
  assert point["sensitivity/ci95_low"] < 1.0 == point["sensitivity/ci95_high"]  # Wilson, n = 1.
  # A test split without negatives has no specificity: left out, not NaN.
  point = transfer.operating_point(val, [0, 0, 1, 1], np.array([[0.4, 0.6], [0.2, 0.8]]), [1, 1])
  assert "specificity" not in point and point["sensitivity"] == 0.5  # 0.6 < 0.7 <= 0.8.
