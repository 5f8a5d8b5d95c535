"""Bad configs fail at start with a message naming the key."""
import subprocess
import sys
from types import SimpleNamespace

import pytest

from configs import common, irma_cnn, lenet_imageclef15
from medjax.train import config_checks
from tests.conftest import REPO_ROOT, set_dotted


@pytest.mark.slow
@pytest.mark.parametrize("override, key", [
    ("--config.nonexistent_key=1", "nonexistent_key"),
    ("--config.batch_size=lots", "batch_size"),
])
def test_cli_rejects_unknown_keys_and_wrong_types(override, key, tmp_path):
  out = subprocess.run([sys.executable, "-m", "medjax.main", "--config=configs/irma_cnn.py:smoke",
                        override, f"--workdir={tmp_path}"], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode != 0
  assert key in out.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_config_arguments_are_checked():
  with pytest.raises(ValueError, match="'varient' is unknown"):
    irma_cnn.get_config("varient=C")
  with pytest.raises(ValueError, match="image_size=big: expected an integer"):
    common.parse_arg("image_size=big", image_size=128)
  with pytest.raises(ValueError, match="lr=fast: expected a number"):
    common.parse_arg("lr=fast", lr=0.01)


@pytest.mark.parametrize("key, value, message", [
    ("optimizer.schedule", "cosine", "config.optimizer.schedule='cosine'"),
    ("loss", "hinge", "config.loss='hinge'"),
    ("pp_train", "decode(1)|sharpen", "config.pp_train: preprocessing op 'sharpen'"),
    ("model.name", "resnet", "config.model.name='resnet'"),
    ("data.name", "imagenet", "config.data.name='imagenet'"),
    ("data.val_fraction", 1.5, "config.data.val_fraction=1.5"),
    ("batch_size", 0, "config.batch_size=0"),
    ("early_stopping.metric", "exact_match", "not a softmax_xent metric"),
    ("loss", "auto", "with config.loss='auto': only 'loss'"),  # irma_cnn stops on accuracy.
])
def test_impossible_values_are_named(key, value, message):
  config = set_dotted(irma_cnn.get_config(), {key: value})
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_checks.check(config)


def test_checks_against_the_dataset():
  single = SimpleNamespace(name="chest_xray", multi_label=False, split_sizes={"train": 100})
  multi = SimpleNamespace(name="imageclef2015", multi_label=True, split_sizes={"train": 100})
  config = irma_cnn.get_config()
  with pytest.raises(ValueError, match="multi-label dataset 'imageclef2015'"):
    config_checks.check_against_data(config, multi)
  config.batch_size = 256
  with pytest.raises(ValueError, match="config.batch_size=256 exceeds the 100"):
    config_checks.check_against_data(config, single)
  lenet = lenet_imageclef15.get_config()
  config_checks.check(lenet)
  config_checks.check_against_data(lenet, multi)
