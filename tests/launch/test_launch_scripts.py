"""The launch scripts: the exact commands of the cloud ones (--dry-run), and local.sh's
process handling with a stand-in for Python (no JAX: the real runs are in
tests/parallel/test_multi_process.py)."""
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

MAIN_ARGS = ["--config=configs/irma_cnn.py:variant=C,dropout=false", "--workdir=/mnt/b/irma C"]


def script(name, *args, env=None, timeout=60):
  return subprocess.run([str(REPO_ROOT / "launch" / name), *args], capture_output=True, text=True,
                        timeout=timeout, env=env)


def commands(stdout: str) -> list[list[str]]:
  return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


def find(cmds, *prefix):
  found = [c for c in cmds if c[:len(prefix)] == list(prefix)]
  assert found, f"no command starting {prefix} in {cmds}"
  return found


def option(cmd, name):
  return next(a.split("=", 1)[1] for a in cmd if a.startswith(name + "="))


def test_tpu_vm_dry_run_prints_the_whole_lifecycle():
  out = script("tpu_vm.sh", "--name=mj", "--zone=us-central2-b", "--accelerator_type=v4-32",
               "--project=proj", "--spot", "--bucket=bkt", "--env=MEDJAX_DATA_DIR=/mnt/b/data",
               "--dry-run", "--", *MAIN_ARGS)
  assert out.returncode == 0, out.stderr
  cmds = commands(out.stdout)
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = ["--zone=us-central2-b", "--project=proj"]
  assert cmds[0] == [*tpu, "create", "mj", *where, "--accelerator-type=v4-32",
                     "--version=tpu-ubuntu2204-base", "--spot"]
  tar = find(cmds, "tar", "-czf")[0]
  assert tar[2:5] == ["/tmp/medjax-mj.tar.gz", "-C", str(REPO_ROOT)] and "--exclude=.git" in tar
  assert find(cmds, *tpu, "scp")[0] == [*tpu, "scp", "/tmp/medjax-mj.tar.gz", "mj:medjax.tar.gz",
                                        "--worker=all", *where]
  ssh = find(cmds, *tpu, "ssh", "mj", "--worker=all", *where)
  remote = [option(c, "--command") for c in ssh]
  assert len(remote) == 3  # unpack, install, run
  assert "tar -xzf ~/medjax.tar.gz -C ~/medjax" in remote[0]
  assert remote[1].startswith("cd ~/medjax && bash launch/install.sh tpu")
  assert "gcsfuse --implicit-dirs --rename-dir-limit=100000 bkt ~/bkt" in remote[1]
  job = shlex.split(remote[2].split("&&")[-1].split("2>&1")[0])
  assert job == ["python3", "-m", "medjax.main", "--distributed=on", *MAIN_ARGS]
  assert "export MEDJAX_DATA_DIR=/mnt/b/data" in remote[2]
  assert remote[2].startswith("set -o pipefail;") and "tee -a ~/medjax_run.log" in remote[2]
  assert cmds[-1] == [*tpu, "delete", "mj", *where, "--quiet"]
  order = [c[4] if c[0] == "gcloud" else c[0] for c in cmds]
  assert order == ["create", "tar", "scp", "ssh", "ssh", "ssh", "delete"]


def test_tpu_vm_steps_keep_and_usage():
  out = script("tpu_vm.sh", "--name=mj", "--zone=z", "--steps=run", "--keep", "--dry-run", "--",
               *MAIN_ARGS)
  assert out.returncode == 0, out.stderr
  (cmd,) = commands(out.stdout)
  assert cmd[4] == "ssh" and "medjax.main --distributed=on" in option(cmd, "--command")
  assert script("tpu_vm.sh", "--name=mj", "--dry-run", "--", *MAIN_ARGS).returncode == 2  # no zone
  assert script("tpu_vm.sh", "--name=mj", "--zone=z", "--dry-run", "--",  # create needs a type
                *MAIN_ARGS).returncode == 2


@pytest.mark.parametrize("tasks", ["per_gpu", "per_node"])
def test_slurm_dry_run_prints_the_batch_script_and_sbatch(tasks, tmp_path):
  out = script("slurm_gpu.sh", "--nodes=2", "--gpus_per_node=4", f"--tasks={tasks}",
               "--partition=gpu", "--account=acct", "--time=01:00:00", "--job_name=irma",
               "--env=MEDJAX_TFDS_DIR=/shared/tfds", "--dry-run", "--", *MAIN_ARGS)
  assert out.returncode == 0, out.stderr
  text, _, submit = out.stdout.partition("# submit:")
  batch = text.split("\n", 1)[1]  # After the "# slurm_logs/irma.sbatch" header.
  lines = batch.splitlines()
  assert lines[0] == "#!/bin/bash"
  per_node = 1 if tasks == "per_node" else 4
  for expected in ["--job-name=irma", "--nodes=2", f"--ntasks-per-node={per_node}",
                   "--gpus-per-node=4", "--time=01:00:00", "--partition=gpu", "--account=acct",
                   "--output=slurm_logs/%x-%j.out"]:
    assert f"#SBATCH {expected}" in lines, expected
  assert f"cd {REPO_ROOT}" in lines and "export MEDJAX_TFDS_DIR=/shared/tfds" in lines
  assert ("export MEDJAX_LOCAL_DEVICE_IDS=0,1,2,3" in lines) == (tasks == "per_node")
  (srun,) = [shlex.split(line) for line in lines if line.startswith("srun")]
  assert srun == ["srun", "--kill-on-bad-exit=1", "--label", "python3", "-m", "medjax.main",
                  *MAIN_ARGS]
  assert commands(submit) == [["sbatch", "slurm_logs/irma.sbatch"]]
  install = lines.index("PYTHON=python3 bash launch/install.sh cuda12")
  assert install < lines.index(next(line for line in lines if line.startswith("srun")))
  (tmp_path / "job.sbatch").write_text(batch)
  assert subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")]).returncode == 0


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: records its arguments; process 1 fails, the others wait.
[[ $1 == -c ]] && exec python "$@"
for a in "$@"; do [[ $a == --process_id=* ]] && id=${a#*=}; done
echo "$*" > "$FAKE_DIR/args.$id"
echo $$ > "$FAKE_DIR/pid.$id"
echo "hello from $id"
if [[ $id == 1 ]]; then  # Fails once every process has started.
  until (( $(ls "$FAKE_DIR" | grep -c '^pid') == 3 )); do sleep 0.05; done
  exit 3
fi
exec sleep 60
"""


def test_local_sh_gives_each_process_an_id_and_stops_all_when_one_fails(tmp_path):
  fake = tmp_path / "python"
  fake.write_text(FAKE_PYTHON)
  fake.chmod(0o755)
  env = {**os.environ, "PYTHON": str(fake), "FAKE_DIR": str(tmp_path)}
  start = time.time()
  out = script("local.sh", "3", "--", "--config=c.py:x", "--workdir=w", env=env)
  assert out.returncode == 3, out.stderr
  assert time.time() - start < 30  # The waiting ones were killed, not waited for.
  args = [(tmp_path / f"args.{i}").read_text().split() for i in range(3)]
  coordinators = {a[2] for a in args}
  assert len(coordinators) == 1 and coordinators.pop().startswith("--coordinator_address=127.0.0.1:")
  assert [a[3:5] for a in args] == [["--num_processes=3", f"--process_id={i}"] for i in range(3)]
  assert all(a[:2] == ["-m", "medjax.main"] and a[5:] == ["--config=c.py:x", "--workdir=w"]
             for a in args)
  for i in range(3):
    assert f"[p{i}] hello from {i}" in out.stdout
    pid = int((tmp_path / f"pid.{i}").read_text())
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
  assert "stopping the others" in out.stderr


def test_local_sh_usage():
  assert script("local.sh", "two", "--", "--workdir=w").returncode == 2
  assert script("local.sh", "2", "--workdir=w").returncode == 2


def test_slurm_no_install_and_cuda_choice():
  out = script("slurm_gpu.sh", "--nodes=1", "--gpus_per_node=1", "--no_install", "--dry-run", "--",
               *MAIN_ARGS)
  assert out.returncode == 0 and "install.sh" not in out.stdout
  out = script("slurm_gpu.sh", "--nodes=1", "--gpus_per_node=1", "--cuda=cuda13",
               "--python=/shared/venv/bin/python", "--dry-run", "--", *MAIN_ARGS)
  assert "PYTHON=/shared/venv/bin/python bash launch/install.sh cuda13" in out.stdout.splitlines()
  assert script("slurm_gpu.sh", "--nodes=1", "--gpus_per_node=1", "--cuda=rocm", "--dry-run",
                "--", *MAIN_ARGS).returncode == 2


def locked_version(name: str) -> str:
  lock = (REPO_ROOT / "requirements.lock").read_text()
  (version,) = [line.split("==")[1].split()[0] for line in lock.splitlines()
                if line.startswith(f"{name}==")]
  return version


@pytest.mark.parametrize("accel", ["cpu", "cuda12", "tpu"])
def test_install_uses_the_lock_then_the_accelerators_jax_at_the_locked_version(accel, tmp_path):
  out = script("install.sh", accel, "--dry-run", env={**os.environ, "PYTHON": "/v/bin/python"})
  assert out.returncode == 0, out.stderr
  cmds = [line.split() for line in out.stdout.splitlines()]
  assert cmds[0][:5] == ["/v/bin/python", "-m", "pip", "install", "-q"] and cmds[0][5] == "-r"
  assert cmds[1] == ["/v/bin/python", "-m", "pip", "install", "-q", "--no-deps",
                     "--no-build-isolation", "-e", str(REPO_ROOT)]
  if accel == "cpu":
    assert cmds[0][6] == str(REPO_ROOT / "requirements.lock") and len(cmds) == 2
    return
  assert cmds[2] == ["/v/bin/python", "-m", "pip", "install", "-q",
                     f"jax[{accel}]=={locked_version('jax')}"]
  # The CPU PyTorch peer is left out; every other pin keeps its hashes, line for line.
  lock = (REPO_ROOT / "requirements.lock").read_text().splitlines()
  filtered = Path(cmds[0][6]).read_text().splitlines()
  start = lock.index(next(line for line in lock if line.startswith("torch==")))
  end = next(i for i in range(start + 1, len(lock)) if lock[i][:1] not in (" ", ""))
  assert filtered == lock[:start] + lock[end:]
  assert all(line.startswith(("    --hash", "    #")) for line in lock[start + 1:end])


def test_install_refuses_an_unknown_accelerator():
  out = script("install.sh", "rocm7")
  assert out.returncode == 2 and "usage" in out.stderr
