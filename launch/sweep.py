r"""Runs a config's sweep: one workdir per point, then a summary table of every point.

  python -m launch.sweep --config=configs/irma_cnn.py[:ARGS] --workdir=ROOT \
      [--run=local|print|summary] [--launcher=local|tpu_vm|slurm_gpu] [--nproc=N] \
      [--launcher_args='...'] [--filter=REGEX] [-- <extra medjax.main args for every point>]

A config opts in with a ``sweep()`` function (big_vision's ``get_hyper``, in the form
ml_collections configs take) returning a list of points, each either
  - a string of ``:ARGS`` words, appended to the config's own ``ARGS`` (later words win):
    ``"variant=A,dropout=false"`` runs ``--config=configs/irma_cnn.py:ARGS,variant=A,...``;
  - a dict of config overrides, passed as flags: ``{"optimizer.learning_rate": 0.1}`` runs
    with ``--config.optimizer.learning_rate=0.1``.
Point ``p`` runs in ``ROOT/<name>``, the name spelled from its overrides
(``variant-A_dropout-false``), so a person can read which is which.

``--run=local`` (default) runs the points here one after another and goes on past a
failed one. Rerunning is cheap: each point resumes from its checkpoints, and a finished
point is returned as is by the trainer (which refuses a workdir that finished with a
different config). ``--run=print`` prints one launch command per point for
``--launcher`` instead (``--launcher_args`` go to the launch script: e.g.
``--launcher_args='--name=mj --zone=us-central2-b --steps=run --keep'`` runs every point
on one TPU slice made beforehand, while SLURM points are separate jobs named after the
point). ``--run=summary`` only collects what is there, e.g. once remote points finished.

Local and summary runs end by writing ``ROOT/summary.md`` and ``ROOT/summary.csv``: one
row per point with its overrides, its status (done / failed / missing) and the headline
metrics of its ``results.json`` (``val/accuracy``, ``test/accuracy``, ``retrieval/mAP`` ...).
"""
import csv
import dataclasses
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from absl import flags

from medjax import cli

REPO_ROOT = Path(__file__).resolve().parents[1]

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """Defined only when the command runs, so that tests may import this module beside
  medjax.main (both name a --config and a --workdir flag)."""
  flags.DEFINE_string("config", None,
                      "Config file with a sweep() function, e.g. configs/irma_cnn.py:smoke.",
                      required=True, flag_values=fv)
  flags.DEFINE_string("workdir", None, "Root folder: one workdir per point, and the summary.",
                      required=True, flag_values=fv)
  flags.DEFINE_enum("run", "local", ["local", "print", "summary"],
                    "local: run the points here in sequence; print: print launch commands; "
                    "summary: only write the summary of what ROOT holds.", flag_values=fv)
  flags.DEFINE_enum("launcher", "local", ["local", "tpu_vm", "slurm_gpu"],
                    "What --run=print prints commands for.", flag_values=fv)
  flags.DEFINE_integer("nproc", 1, "Processes per point with the local launcher "
                       "(launch/local.sh).", flag_values=fv)
  flags.DEFINE_string("launcher_args", "", "Options for launch/tpu_vm.sh or "
                      "launch/slurm_gpu.sh.", flag_values=fv)
  flags.DEFINE_string("filter", "", "Keep only points whose overrides match this regex.",
                      flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Point:
  name: str
  args: str        # ":ARGS" words added to the config's own.
  overrides: dict  # config key -> value, passed as --config.KEY=VALUE.

  @property
  def spelled(self) -> str:
    """The point's overrides as one string (what --filter matches)."""
    return ",".join(filter(None, [self.args, *(f"{k}={v}" for k, v in self.overrides.items())]))

  @property
  def params(self) -> dict:
    """Override name -> value, for the summary's columns."""
    words = dict(w.partition("=")[::2] for w in self.args.split(",") if w)
    return {**{k: v or "true" for k, v in words.items()},
            **{k: str(v) for k, v in self.overrides.items()}}


def _name(spelled: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]", "_", spelled.replace("=", "-").replace(",", "_"))


def load_points(config: str, pattern: str = "") -> tuple[str, str, list[Point]]:
  """``(config path, its ARGS, the sweep's points)`` for ``--config=PATH[:ARGS]``."""
  path, _, base_args = config.partition(":")
  if not Path(path).is_file():
    raise cli.UserError(f"--config={config}: no such config file")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  if spec is None:
    raise cli.UserError(f"--config={config}: cannot load {path} as a Python config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweep"):
    raise cli.UserError(f"{path} defines no sweep() function to expand")
  points = []
  for raw in module.sweep():
    if isinstance(raw, str):
      point = Point("", raw, {})
    elif isinstance(raw, dict):
      point = Point("", "", dict(raw))
    else:
      raise TypeError(f"{path}: sweep() returned {raw!r}; expected ARGS strings or dicts")
    points.append(dataclasses.replace(point, name=_name(point.spelled)))
  names = [p.name for p in points]
  if len(set(names)) != len(names):
    raise ValueError(f"{path}: sweep() has repeated points: {sorted({n for n in names if names.count(n) > 1})}")
  return path, base_args, [p for p in points if re.search(pattern, p.spelled)]


def main_args(path: str, base_args: str, point: Point, root: str, extra: list[str]) -> list[str]:
  """The ``medjax.main`` arguments of one point."""
  args = ",".join(filter(None, [base_args, point.args]))
  return [f"--config={path}{':' + args if args else ''}", f"--workdir={Path(root) / point.name}",
          *(f"--config.{k}={v}" for k, v in point.overrides.items()), *extra]


def launch_command(launcher: str, args: list[str], point: Point, nproc: int,
                   launcher_args: str) -> list[str]:
  """The command that runs one point with ``launcher``."""
  opts = shlex.split(launcher_args)
  if launcher == "local":
    if nproc == 1:
      return [sys.executable, "-m", "medjax.main", *args]
    return [str(REPO_ROOT / "launch" / "local.sh"), str(nproc), "--", *args]
  if launcher == "slurm_gpu":
    return [str(REPO_ROOT / "launch" / "slurm_gpu.sh"), *opts, f"--job_name={point.name}", "--",
            *args]
  return [str(REPO_ROOT / "launch" / "tpu_vm.sh"), *opts, "--", *args]


def summarize(root: Path, points: list[Point], failed: set[str]) -> list[dict]:
  """Writes ``root/summary.md`` and ``root/summary.csv``; returns the rows."""
  from medjax.eval import writers  # Pulls in TensorFlow (clu): only summaries need it.
  rows = []
  for p in points:
    path = root / p.name / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    status = "failed" if p.name in failed else "done" if results else "missing"
    rows.append({"point": p.name, **p.params, "status": status, **writers.headline(results)})
  columns = list(dict.fromkeys(k for row in rows for k in row))
  params = list(dict.fromkeys(k for p in points for k in p.params))
  metrics = sorted(c for c in columns if c not in {"point", "status", *params})
  columns = ["point", *params, "status", *metrics]
  root.mkdir(parents=True, exist_ok=True)
  with open(root / "summary.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)

  def cell(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
  (root / "summary.md").write_text("\n".join(lines) + "\n")
  return rows


def main(argv):
  extra = argv[1:]  # What followed "--".
  path, base_args, points = load_points(FLAGS.config, FLAGS.filter)
  if not points:
    raise cli.UserError(f"no point of {path}'s sweep matches --filter={FLAGS.filter!r}")
  root = Path(FLAGS.workdir)
  commands = [launch_command(FLAGS.launcher, main_args(path, base_args, p, FLAGS.workdir, extra),
                             p, FLAGS.nproc, FLAGS.launcher_args) for p in points]
  if FLAGS.run == "print":
    print("\n".join(shlex.join(c) for c in commands))
    return
  failed = set()
  if FLAGS.run == "local":
    if FLAGS.launcher != "local":
      raise cli.UserError("--run=local runs points here: use --launcher=local, or --run=print")
    for i, (point, command) in enumerate(zip(points, commands), 1):
      print(f"[sweep] point {i}/{len(points)}: {point.name}", flush=True)
      if subprocess.run(command, check=False).returncode:
        failed.add(point.name)
        print(f"[sweep] point {point.name} failed; going on", flush=True)
  rows = summarize(root, points, failed)
  done = sum(r["status"] == "done" for r in rows)
  print(f"[sweep] {done}/{len(rows)} points done; summary in {root / 'summary.md'} and "
        f"{root / 'summary.csv'}")
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main, "launch.sweep", define_flags)
