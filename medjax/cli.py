"""What every ``python -m medjax.<command>`` shares: one way to define flags, a quiet
console, and a user's mistake as one line rather than a traceback.

Each command module defines ``define_flags(flag_values)`` (its own flags; the same names
for the same things: ``--workdir``, ``--config``, ``--data_dir`` as in
``config.data.manual_dir``, ``--out``, ``--workdirs`` for several finished runs
(:func:`finished_runs`), ``--split``, ``--k``; positional arguments are always images)
and ``main(argv)``, and ends with
``cli.run(main, "medjax.<command>", define_flags)``.

A command raises :class:`UserError` for a problem the user can fix (a workdir that is not
a finished run, runs that cannot be compared); :func:`run` prints it, and every flag or
config mistake absl or ml_collections reports while parsing, as
``medjax.<command>: error: <message>`` on stderr and exits with status 2, the usual status
of a command-line usage error. Anything else is a bug and keeps its traceback.

Importing this module quiets TensorFlow's C++ start-up notices (oneDNN, CPU features,
CUDA/TensorRT, absl's pre-init warning), so it must come before anything that imports
TensorFlow; ``MEDJAX_TF_STARTUP_LOG=1`` shows them again.
"""
import contextlib
import difflib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging

HELP_ARGS = ("--help", "-h", "--helpshort", "--helpfull", "-?")


class UserError(Exception):
  """A problem with the command's arguments or inputs, explained in one line."""


@contextlib.contextmanager
def _stderr_fd_silenced():
  """Sends file descriptor 2 (where C++ logs go, below Python) to /dev/null."""
  sys.stderr.flush()
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


class _QuietLoader(importlib.abc.Loader):
  def __init__(self, inner):
    self.inner = inner

  def create_module(self, spec):
    return self.inner.create_module(spec)

  def exec_module(self, module):
    with _stderr_fd_silenced():
      self.inner.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """Runs the first ``import tensorflow`` with C++ stderr silenced.

  TensorFlow 2.21 logs through absl's C++ logging, which ignores ``TF_CPP_MIN_LOG_LEVEL``,
  and prints its notices while its shared libraries load; Python errors of the import
  still propagate as exceptions, and later C++ warnings and errors still reach stderr.
  """

  def find_spec(self, name, path, target=None):
    if name != "tensorflow":
      return None
    sys.meta_path.remove(self)
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


# Older TensorFlow and XLA builds still read the level (0 info, 1 warning, 2 error).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "tensorflow" not in sys.modules and os.environ.get("MEDJAX_TF_STARTUP_LOG") != "1":
  sys.meta_path.insert(0, _QuietTensorFlowImport())


def writable(flag: str, path, *, folder: bool) -> Path:
  """``--flag``'s output path, refused before any work when it cannot be written: a folder
  where a file is wanted (or the reverse), or a file where a parent folder should be."""
  path = Path(path)
  if path.exists() and path.is_dir() != folder:
    raise UserError(f"--{flag}={path} is a {'file' if folder else 'folder'}; give "
                    f"{'a folder' if folder else 'a file name'}")
  parent = next(p for p in path.absolute().parents if p.exists())
  if not parent.is_dir():
    raise UserError(f"--{flag}={path}: {parent} is a file, not a folder")
  return path


def finished_runs(argv, given) -> list[Path]:
  """The runs of ``--workdirs`` (compare, ensemble): two or more, none twice, and none given
  as arguments, which are images in every command that takes arguments."""
  if len(argv) > 1:
    listed = ",".join([*(given or []), *argv[1:]])
    raise UserError(f"give the runs as --workdirs={listed}, not as arguments")
  if not given:
    raise UserError("--workdirs is required: give --workdirs=W1,W2[,...] (two or more "
                    "finished runs)")
  if len(given) < 2:
    raise UserError(f"--workdirs={','.join(given)}: give at least two finished runs, "
                    f"comma-separated (a repeated --workdirs keeps only its last value)")
  workdirs, seen = [Path(w) for w in given], {}
  for workdir in workdirs:
    first = seen.setdefault(workdir.resolve(), workdir)
    if first is not workdir:
      raise UserError(f"--workdirs: {first} and {workdir} are the same run; give "
                      f"different runs")
  return workdirs


def started_as(module: str) -> bool:
  """Whether this process is ``python -m module`` itself (``sys.argv[0]`` is its file), not
  a test or a tool calling into it."""
  return Path(sys.argv[0]).parts[-len(module.split(".")):] == (
      *module.split(".")[:-1], module.split(".")[-1] + ".py")


def fail(name: str, message: str) -> None:
  """Prints ``name: error: message`` on stderr and exits with status 2. The message is one
  line, unless it lists several findings (every bad file of a dataset), one per line."""
  print(f"{name}: error: {message}", file=sys.stderr)
  sys.exit(2)


def usage(doc: str | None, define_flags: Callable | None) -> str:
  """A command's ``--help``: its module docstring, then its own flags with their help."""
  text = textwrap.dedent(doc or "").strip() + "\n"
  if define_flags is not None:
    own = flags.FlagValues()
    define_flags(own)
    names = sorted(own)
    if names:
      text += "\nflags:\n" + "\n".join(_flag_help(own[n]) for n in names) + "\n"
  return text


def _flag_help(flag) -> str:
  default = "" if flag.default is None else f" (default: {flag.default!r})"
  required = " (required)" if flag.default is None and flag.name in _required(flag) else ""
  text = flag.help.partition(";\n")[0]  # Without absl's "repeat this option" of multi flags.
  line = f"--{flag.name}: {text}{default}{required}"
  return textwrap.fill(line, 92, initial_indent="  ", subsequent_indent="      ")


def _required(flag) -> set:
  # absl keeps "required" as a validator; its message names the flag.
  return {flag.name} if any("must have a value" in getattr(v, "message", "")
                            for v in getattr(flag, "validators", [])) else set()


def run(main: Callable, name: str, define_flags: Callable | None = None) -> None:
  """``absl.app.run(main)`` for command ``name`` (``medjax.<command>``), after
  ``define_flags(flags.FLAGS)``: ``--help`` prints :func:`usage` and exits 0; a flag or
  config mistake, or a :class:`UserError` from ``main``, is one line and exit 2."""
  if define_flags is not None:
    define_flags(flags.FLAGS)
  if any(arg in HELP_ARGS for arg in sys.argv[1:]):
    sys.stdout.write(usage(sys.modules["__main__"].__doc__, define_flags))
    sys.exit(0)
  app.run(guard(main, name), flags_parser=lambda argv: parse(argv, name))


class QuietLibraries(logging.Filter):
  """Keeps the console to progress: INFO lines only from medjax and clu's progress report
  (not JAX's backend discovery or Orbax's bookkeeping); warnings and errors from everywhere."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or any(
        part in record.pathname for part in ("/medjax/", "/clu/", "/benchmarks/", "/launch/"))


def guard(main: Callable, name: str) -> Callable:
  """``main`` with a :class:`UserError` turned into one line and exit 2, and library INFO
  lines kept off the console."""
  def guarded(argv):
    absl_logging.get_absl_handler().addFilter(QuietLibraries())
    try:
      return main(argv)
    except UserError as e:
      fail(name, str(e))
  return guarded


def parse(argv: list[str], name: str, fv: flags.FlagValues = flags.FLAGS) -> list[str]:
  """``fv(argv)``, with absl's and ml_collections' reports of a bad flag, a bad config
  argument, an unknown ``--config.KEY`` or a missing config file as one line and exit 2."""
  try:
    args = fv(argv)
  except flags.Error as e:
    fail(name, _flags_error(e, name, argv, fv))
  except Exception as e:
    not_a_config = _unloadable_config_file(e, argv)
    if not_a_config:
      fail(name, not_a_config)
    override = [a for a in argv[1:] if a.startswith("--config.")]
    if not override or not isinstance(e, (KeyError, AttributeError)):
      raise
    # ml_collections' message (quoted, sometimes twice): the key and, on a near miss,
    # 'Did you mean "name" instead of ...'.
    message = str(e.args[0] if e.args else e)
    key = re.search(r"[\w.]+", message)
    near = re.search(r'Did you mean "([\w.]+)"', message)
    fail(name, _no_such_key(override, key.group(0) if key else message,
                            near.group(1) if near else None))
  _check_config_files(name, fv)
  return args


def _unloadable_config_file(error: Exception, argv: list[str]) -> str | None:
  """The one-line reason when ``error`` came from loading a ``--config`` file that is not
  a config file (its code fails on import, or it defines no ``get_config``); None for
  anything else, such as a bug inside a config's ``get_config``, which keeps its traceback."""
  frames = traceback.extract_tb(error.__traceback__)
  ml_collections = [f for f in frames if "ml_collections" in f.filename]
  if not ml_collections:
    return None
  module = re.search(r"module '(\w+)_config'", str(error))  # ml_collections' "<flag>_config".
  flag = module.group(1) if module else "config"
  given = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"--{flag}=")]
  path = given[-1].partition(":")[0] if given else f"--{flag}"
  if isinstance(error, AttributeError) and "get_config" in str(error) and module:
    return f"{path}: not a config file (it defines no get_config function)"
  if any(f.name == "_LoadConfigModule" for f in ml_collections):  # Its code failed on import.
    where = (f"line {error.lineno}" if isinstance(error, SyntaxError) and
             error.filename == os.path.abspath(path) else
             f"{frames[-1].filename}:{frames[-1].lineno}")
    why = error.msg if isinstance(error, SyntaxError) else f"{type(error).__name__}: {error}"
    return f"{path}: not a loadable config file ({where}: {why})"
  return None


def _dotted_keys(config, prefix: str = "") -> list[str]:
  """Every key of a loaded config, nested ones dotted (``data.name``)."""
  if not hasattr(config, "items"):
    return []
  keys = []
  for key, value in config.items():
    keys += [prefix + key] + _dotted_keys(value, f"{prefix}{key}.")
  return keys


def _no_such_key(override: list[str], key: str, near: str | None) -> str:
  hint = f" (did you mean {near!r}?)" if near else ""
  return (f"{', '.join(override)}: the config has no key {key!r}{hint}; see the config file "
          f"for its keys")


def _flags_error(error: Exception, name: str, argv: list[str], fv: flags.FlagValues) -> str:
  message = str(error)
  unknown = re.search(r"Unknown command line flag '(\w+)\.([\w.]+)'", message)
  if unknown and unknown.group(1) in fv:  # A --config.KEY override of a key it lacks.
    prefix = unknown.group(1) + "."
    override = [a for a in argv[1:] if a.startswith(f"--{prefix}{unknown.group(2)}")]
    near = difflib.get_close_matches(unknown.group(2), _dotted_keys(fv[unknown.group(1)].value),
                                     n=1)
    return _no_such_key(override or [f"--{prefix}{unknown.group(2)}"], unknown.group(2),
                        near[0] if near else None)
  if "Error whilst parsing config file" in message:
    # ml_collections wraps what get_config(arg) raised with its traceback; a ValueError
    # there is a bad config argument (configs.common.parse_arg), which its last line says.
    last = message.strip().splitlines()[-1].strip()
    if last.startswith("ValueError: "):
      return last[len("ValueError: "):]
    raise error
  missing = re.search(r"Flag --(\S+) must have a value other than None", message)
  if missing:
    return f"--{missing.group(1)} is required (see python -m {name} --help)"
  return f"{' '.join(message.split())} (see python -m {name} --help)"


def _check_config_files(name: str, fv: flags.FlagValues) -> None:
  """Config files are loaded lazily: a missing one would otherwise surface mid-run."""
  for flag_name in list(fv):
    value = fv[flag_name].value
    if type(value).__name__ == "_ErrorConfig":
      path = fv[flag_name].serialize().partition("=")[2].partition(":")[0]
      if not os.path.isfile(path):
        fail(name, f"--{flag_name}={path}: no such config file; give one such as "
                   f"configs/irma_cnn.py")
      raise object.__getattribute__(value, "_error")
