"""retrieve and serve: ``--help`` prints the usage; a workdir holding no finished run, or
a bad flag value, is one line on stderr and exit status 2."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # Subprocesses importing JAX and TensorFlow.


def run(*args, cwd):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("command, args", [("medjax.retrieve", ["image.png"]),
                                           ("medjax.serve", ["--port=1"])])
def test_help_and_unfinished_run(command, args, tmp_path):
  assert f"python -m {command} --workdir=W" in run(command, "--help", cwd=REPO_ROOT).stdout
  (tmp_path / "half").mkdir()
  failed = run(command, f"--workdir={tmp_path / 'half'}", *args, cwd=tmp_path)
  assert failed.returncode == 2 and "Traceback" not in failed.stderr
  last = failed.stderr.strip().splitlines()[-1]
  assert last.startswith(f"{command}: error:") and "no finished run" in last


def test_serve_refuses_a_bad_upload_limit(tmp_path):
  failed = run("medjax.serve", f"--workdir={tmp_path}", "--max_upload_mb=0", cwd=tmp_path)
  assert failed.returncode == 2 and "--max_upload_mb=0" in failed.stderr.splitlines()[-1]
