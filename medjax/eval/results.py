"""What a workdir holds at the end: ``results.json``, its reuse, and several seeds combined.

A workdir whose ``results.json`` holds the same resolved config is a finished run and is
returned as is (never redone); one with a different config is refused, naming the keys.

Medical results vary a lot with the seed, so a claim should come with its spread: every
scalar metric of the per-seed ``results.json`` files is reported as ``<key>/mean`` and
``<key>/std`` (sample standard deviation over seeds, ddof 1: the spread a reader
should expect of another seed; left out where only one seed defines the key, since one
value has no sample spread and 0 would claim none), with the seeds listed.

Every ``results.json`` also records its ``environment`` (versions, lock file hash), so a
number in the docs says what produced it.
"""
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import jax
import numpy as np

from medjax import cli, provenance
from medjax.atomic import save_json


def open_workdir(workdir: Path, config) -> tuple[dict, dict | None]:
  """Creates ``workdir``; returns ``(resolved config, stored results or None)``."""
  provenance.source_at_start()  # The commit this run starts from, not the one at its end.
  if workdir.exists() and not workdir.is_dir():
    raise cli.UserError(f"--workdir={workdir} is a file; give a folder (new or a run's)")
  workdir.mkdir(parents=True, exist_ok=True)
  resolved = json.loads(config.to_json_best_effort())
  path = workdir / "results.json"
  if not path.exists():
    return resolved, None
  results = json.loads(path.read_text())
  if results.get("config") != resolved:
    old = results.get("config", {})
    keys = sorted(k for k in set(old) | set(resolved) if old.get(k) != resolved.get(k))
    raise cli.UserError(f"{path} holds a finished run with a different config (differs in "
                        f"{keys}); use a new --workdir or remove that file")
  logging.info("%s already holds the finished run; not redoing it.", workdir)
  return resolved, results


def finish(workdir: Path, results: dict, resolved_config: dict, write_report=None) -> dict:
  """Adds the config, the command and the environment; process 0 writes ``results.json``.

  ``write_report(results)`` runs first, since ``results.json`` marks the run finished.
  """
  results["config"] = resolved_config
  results["command"] = command_line()
  results["environment"] = provenance.environment()
  if jax.process_index() == 0:
    if write_report is not None:
      write_report(results)
    save_json(Path(workdir) / "results.json", results)
  return results


def command_line() -> str:
  """How this process was started, as a shell line a reader can rerun: the ``MEDJAX_*``
  settings of the environment, then ``python -m medjax.main ...`` (or the raw argv)."""
  env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
         if k.startswith("MEDJAX_")]
  argv = sys.argv
  if argv and cli.started_as("medjax.main"):
    argv = ["python", "-m", "medjax.main", *argv[1:]]
  return " ".join(env + [shlex.join(argv)])


def over_seeds(per_seed: list[dict], config, workdir: Path) -> dict:
  """Mean and std over seeds of every scalar; a measure some seed leaves undefined (e.g.
  the PPV of a class it never predicts) is averaged over the seeds that define it, and
  ``<key>/num_seeds`` says how many."""
  seeds = [r["config"]["seed"] for r in per_seed]
  # A mean of the seeds' interval bounds is no interval: those stay in each seed's file.
  keys = dict.fromkeys(k for r in per_seed for k, v in r.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and not k.endswith(("/ci95_low", "/ci95_high")) and "bootstrap/" not in k)
  out = {"seeds": seeds}
  for key in keys:
    values = np.array([r[key] for r in per_seed if key in r], np.float64)
    out[f"{key}/mean"] = float(values.mean())
    if len(values) > 1:
      out[f"{key}/std"] = float(values.std(ddof=1))
    if len(values) < len(per_seed):
      out[f"{key}/num_seeds"] = len(values)
  workdir.mkdir(parents=True, exist_ok=True)
  return finish(workdir, out, json.loads(config.to_json_best_effort()))
