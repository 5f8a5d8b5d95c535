"""A storage error (here: the workdir's parent is a file) ends the run with a clear message."""
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_unwritable_workdir_gives_a_clear_message(tmp_path):
  blocker = tmp_path / "not_a_folder"
  blocker.write_text("a file where the workdir's parent should be")
  out = subprocess.run([sys.executable, "-m", "medjax.main", "--config=configs/irma_cnn.py:smoke",
                        f"--workdir={blocker / 'run'}"], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode != 0
  assert "medjax: cannot write" in out.stderr and "Not a directory" in out.stderr
  assert "Traceback" not in out.stderr
