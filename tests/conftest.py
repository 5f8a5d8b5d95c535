"""Shared fixtures: where the real data is, a session-wide TFDS folder, a tiny image folder.

Real data is read in place from ``../shared/data`` (relative to the repository root) or
``$MEDJAX_DATA_DIR``; tests needing it skip with a message when it is absent.
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

# The order test files run in (longest first): the hooks live in their own module.
from tests.scheduling import (pytest_addoption, pytest_collection_modifyitems,  # noqa: F401
                              pytest_configure)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _share_compilations() -> None:
  """One JAX compilation cache for this test run: its worker processes and every CLI they
  start (they inherit the environment) load an identical program compiled once instead of
  compiling it again (the tiny model's step in each trainer test, the same smoke run
  killed and resumed). Set before JAX is imported; removed when the run that made it ends."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return  # The controller's (xdist workers inherit it) or the user's own.
  cache = tempfile.mkdtemp(prefix="medjax-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  atexit.register(shutil.rmtree, cache, ignore_errors=True)


_share_compilations()


def _tensorflow_as_medjax_commands_start_it() -> None:
  """Input graphs as written (``tf_runtime``) in every test process, whichever test touches
  TensorFlow first; the commands set this before TensorFlow starts, and so must this."""
  from medjax import cli  # noqa: F401  (first: TensorFlow's start-up notices silenced)
  from medjax.data import tf_runtime
  tf_runtime.run_graphs_as_written()


_tensorflow_as_medjax_commands_start_it()


def shared_data_dir() -> Path:
  return Path(os.environ.get("MEDJAX_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
  path = shared_data_dir()
  if not (path / "chest_xray").is_dir():
    pytest.skip(f"real data not found at {path} (expected ../shared/data beside the repo or "
                f"$MEDJAX_DATA_DIR)")
  return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
  """One prepared-TFDS folder per test session, so each dataset is prepared once."""
  return tmp_path_factory.mktemp("tfds")


def write_tiny_folder(root: Path, per_class: dict[str, int], size: int = 40, seed: int = 0):
  """``root/<split>/<class>/*.png`` of noise; class 'blob' adds a bright square at a random
  place (a task that survives the rotation and crop augmentation)."""
  rng = np.random.default_rng(seed)
  for split, n in per_class.items():
    for label, name in enumerate(("blank", "blob")):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(n):
        img = rng.integers(0, 60, (size, size), dtype=np.uint8)
        if label:
          y0, x0 = rng.integers(4, size - 16, 2)
          img[y0:y0 + 12, x0:x0 + 12] = 220
        Image.fromarray(img).save(folder / f"{name}_{i:03d}.png")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
  """A data_dir holding ``image_folder/{train,test}/{blank,blob}``: 48 + 16 images."""
  data_dir = tmp_path_factory.mktemp("data")
  write_tiny_folder(data_dir / "image_folder", {"train": 24, "test": 8})
  return data_dir


# A recipe that learns the tiny task (test accuracy 1.0) from seeds 0-7 with both XLA:CPU
# reduction back ends; at lr 0.05, or with early stopping on the 4 validation images, the
# outcome turned on rounding (docs/performance.md, "Reductions on YNNPACK").
TINY_TASK = {"num_epochs": 8, "optimizer.learning_rate": 0.02, "model.variant": "A",
             "early_stopping.metric": ""}


def tiny_config(data_dir: Path, tfds_dir: Path, arg: str = "", **overrides):
  """The system 4 config on the tiny folder at 32x32 with the smallest variant (D)."""
  from configs import irma_cnn
  config = irma_cnn.get_config(f"dataset=image_folder,variant=D,image_size=32{',' if arg else ''}{arg}")
  config.data.manual_dir = str(data_dir)
  config.data.tfds_dir = str(tfds_dir)
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_epochs = 2
  config.log_every = 1
  config.checkpoint_every_steps = 2
  return set_dotted(config, overrides)


def set_dotted(config, overrides: dict):
  """Applies ``{"optimizer.learning_rate": 0.1, ...}`` to a ConfigDict; returns it."""
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    target = config
    for p in path:
      target = target[p]
    target[leaf] = value
  return config


def run_on_devices(script: str, devices: int = 2) -> None:
  """Runs ``script`` in a fresh interpreter with ``devices`` simulated CPU devices; it must
  exit 0 (the device count is fixed at JAX start-up, hence the subprocess)."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float,
             poll: float = 0.02) -> None:
  """Polls ``ready()`` until it holds; fails if ``proc`` ends first or ``timeout`` passes."""
  deadline = time.time() + timeout
  while not ready():
    assert proc.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline, f"not ready after {timeout} s"
    time.sleep(poll)


def sigkill_when(command: list[str], env: dict, ready: Callable[[], bool],
                 timeout: float) -> None:
  """Starts ``command`` in its own session, waits until ``ready()``, then SIGKILLs the whole
  process group and reaps it: a run killed as by the OOM killer or a pre-empted node."""
  proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  wait_for(proc, ready, timeout)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
