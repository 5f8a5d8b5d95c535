"""One convention for every command: ``--help`` shows the usage and the command's flags;
a flag, config or input mistake is one line on stderr and exit status 2; a bug keeps its
traceback; TensorFlow's start-up notices stay off the console."""
import importlib
import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from medjax import cli
from tests.conftest import REPO_ROOT

# python -m name -> the module that defines its flags.
COMMANDS = {
    "medjax.main": "medjax.main", "medjax.describe": "medjax.describe",
    "medjax.classify": "medjax.classify", "medjax.retrieve": "medjax.retrieve",
    "medjax.predict": "medjax.predict", "medjax.explain": "medjax.explain.__main__",
    "medjax.compare": "medjax.compare", "medjax.export": "medjax.export",
    "medjax.serve": "medjax.serve", "medjax.ensemble": "medjax.ensemble",
    "benchmarks.run": "benchmarks.run", "launch.sweep": "launch.sweep",
}
NOISE = ("oneDNN", "cpu_feature_guard", "absl::InitializeLog", "TF-TRT", "cuda", "TensorRT",
         "rebuild TensorFlow", "Unable to initialize backend")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_usage_shows_the_command_line_and_every_flag(command):
  module = importlib.import_module(COMMANDS[command])
  text = cli.usage(module.__doc__, module.define_flags)
  assert f"python -m {command}" in text
  own = flags.FlagValues()
  module.define_flags(own)
  assert list(own), command
  for name in own:
    assert f"--{name}: " in text
  # The shared names mean the same everywhere: no command spells them differently.
  assert not {"work_dir", "output", "manual_dir", "config_file"} & set(own)


def test_shared_flags_have_one_spelling():
  seen = set()
  for module_name in COMMANDS.values():
    own = flags.FlagValues()
    importlib.import_module(module_name).define_flags(own)
    seen |= set(own)
  assert {"workdir", "config", "data_dir", "out"} <= seen


def _flag_values():
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", lock_config=True, flag_values=fv)
  flags.DEFINE_string("workdir", None, "workdir", required=True, flag_values=fv)
  flags.DEFINE_integer("k", 1, "k", flag_values=fv)
  return fv


def _one_line_exit_2(capsys, argv, *expected):
  with pytest.raises(SystemExit) as exit_:
    cli.parse(argv, "medjax.x", _flag_values())
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and err.startswith("medjax.x: error: ")
  for text in expected:
    assert text in err
  return err


def test_missing_required_flag(capsys):
  _one_line_exit_2(capsys, ["x", f"--config={REPO_ROOT}/configs/irma_cnn.py:smoke"],
                   "--workdir is required", "--help")


def test_bad_flag_value(capsys):
  _one_line_exit_2(capsys, ["x", "--workdir=w", "--k=many"], "--k")


def test_missing_config_file(capsys):
  _one_line_exit_2(capsys, ["x", "--workdir=w", "--config=configs/nosuch.py"],
                   "configs/nosuch.py", "no such config file")


def test_unknown_config_argument(capsys):
  _one_line_exit_2(capsys, ["x", "--workdir=w", f"--config={REPO_ROOT}/configs/vlad.py:bogus=1"],
                   "'bogus' is unknown")


def test_a_file_that_is_not_a_config_is_named_in_one_line(capsys, tmp_path):
  text = tmp_path / "notes.txt"
  text.write_text("hello\n")
  _one_line_exit_2(capsys, ["x", "--workdir=w", f"--config={text}"],
                   f"{text}: not a loadable config file", f"{text}:1", "NameError")
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(:\n")
  _one_line_exit_2(capsys, ["x", "--workdir=w", f"--config={broken}"],
                   f"{broken}: not a loadable config file (line 1: invalid syntax)")
  typo = tmp_path / "typo.py"
  typo.write_text("def get_confg():\n  return None\n")
  # ml_collections loads every config as module "config_config", reusing a loaded one's
  # namespace; a command loads one config per process.
  sys.modules.pop("config_config", None)
  _one_line_exit_2(capsys, ["x", "--workdir=w", f"--config={typo}:smoke"],
                   f"{typo}: not a config file", "no get_config")


def test_a_bug_inside_get_config_keeps_its_traceback(tmp_path):
  buggy = tmp_path / "buggy.py"
  buggy.write_text("def get_config():\n  return 1 / 0\n")
  with pytest.raises(ZeroDivisionError):
    cli.parse(["x", "--workdir=w", f"--config={buggy}"], "medjax.x", _flag_values())


def test_a_mistyped_config_key_is_named_with_its_near_miss(capsys):
  err = _one_line_exit_2(capsys, ["x", "--workdir=w",
                                  f"--config={REPO_ROOT}/configs/irma_cnn.py:smoke",
                                  "--config.batch_sise=4"], "--config.batch_sise=4")
  assert "no key 'batch_sise' (did you mean 'batch_size'?)" in err and "\\" not in err


def test_good_flags_parse():
  fv = _flag_values()
  rest = cli.parse(["x", "--workdir=w", f"--config={REPO_ROOT}/configs/irma_cnn.py:smoke",
                    "IMAGE"], "medjax.x", fv)
  assert rest == ["x", "IMAGE"] and fv.workdir == "w" and fv.config.pipeline == "supervised"


def test_user_error_is_one_line_and_a_bug_keeps_its_traceback(capsys):
  def bad_input(argv):
    raise cli.UserError("image.png does not exist; give image files")

  with pytest.raises(SystemExit) as exit_:
    cli.guard(bad_input, "medjax.x")(["x"])
  assert exit_.value.code == 2
  assert capsys.readouterr().err == "medjax.x: error: image.png does not exist; give image files\n"

  def bug(argv):
    raise ZeroDivisionError("a bug")

  with pytest.raises(ZeroDivisionError):
    cli.guard(bug, "medjax.x")(["x"])


@pytest.mark.slow  # Every command in a subprocess, as a user runs it.
def test_every_command_help_and_a_quiet_console(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  env.pop("MEDJAX_TF_STARTUP_LOG", None)
  for command in sorted(COMMANDS):
    shown = subprocess.run([sys.executable, "-m", command, "--help"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, (command, shown.stderr[-2000:])
    assert f"python -m {command}" in shown.stdout and "flags:" in shown.stdout, command
  # A command that imports TensorFlow and JAX and stops at a user error prints that line
  # alone: no start-up notices before it.
  for args in (["medjax.predict", f"--workdir={tmp_path / 'none'}", "image.png"],
               ["medjax.main", "--config=configs/vlad.py:dataset=/some/missing/path",
                f"--workdir={tmp_path / 'w'}"],
               ["medjax.main", "--config=configs/vlad.py:dataset=no_such_dataset",
                f"--workdir={tmp_path / 'w'}"],
               ["medjax.main", "--config=configs/vlad.py:smoke"]):
    failed = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1, (args, failed.stderr[-3000:])
    assert lines[0].startswith(f"{args[0]}: error: ")
    assert not any(word in failed.stderr for word in NOISE)
