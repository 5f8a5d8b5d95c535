"""k-means killed with SIGKILL mid-fit, then rerun, ends exactly where an uninterrupted fit does."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from medjax.features import kmeans
from tests.conftest import REPO_ROOT, sigkill_when

pytestmark = pytest.mark.slow  # A run killed with SIGKILL and rerun.


SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from pathlib import Path
import jax
import numpy as np
from medjax.features import kmeans

sample = np.random.default_rng(0).normal(size=(100_000, 32)).astype(np.float32)
kmeans.fit(sample, 64, key=jax.random.PRNGKey(0), max_iter=150, tol=0.0,
           checkpoint=Path(sys.argv[1]))
"""


def test_kmeans_killed_then_rerun_matches_uninterrupted(tmp_path):
  path = tmp_path / "killed.npz"
  command = [sys.executable, "-c", SCRIPT, str(path)]
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

  def three_iterations_saved():
    if not path.exists():
      return False
    with np.load(path) as z:
      return int(z["iteration"]) >= 3

  sigkill_when(command, env, three_iterations_saved, timeout=300)
  with np.load(path) as z:
    killed_at = int(z["iteration"])
  assert 3 <= killed_at < 150

  rerun = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert "Resuming k-means" in rerun.stderr

  sample = np.random.default_rng(0).normal(size=(100_000, 32)).astype(np.float32)
  straight = kmeans.fit(sample, 64, key=jax.random.PRNGKey(0), max_iter=150, tol=0.0,
                        checkpoint=tmp_path / "straight.npz")
  with np.load(path) as z:
    assert int(z["iteration"]) == straight.n_iter == 150
    np.testing.assert_allclose(z["centers"] + sample.mean(0), straight.centers, rtol=1e-5,
                               atol=1e-5)
