"""predict, explain and export: ``--help`` prints the usage; a workdir that holds no
finished run is one line on stderr and exit status 2."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

COMMANDS = {"medjax.predict": ["image.png"], "medjax.explain": ["--out=maps", "image.png"],
            "medjax.export": ["--out=saved"]}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_and_unfinished_run(command, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  shown = subprocess.run([sys.executable, "-m", command, "--help"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
  assert shown.returncode == 0 and f"python -m {command} --workdir=W" in shown.stdout
  (tmp_path / "half").mkdir()
  failed = subprocess.run([sys.executable, "-m", command, f"--workdir={tmp_path / 'half'}",
                           *COMMANDS[command]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
  assert failed.returncode == 2 and "Traceback" not in failed.stderr
  last = failed.stderr.strip().splitlines()[-1]
  assert last.startswith(f"{command}: error:") and "holds no finished run" in last
