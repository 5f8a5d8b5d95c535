"""Combining the results of several runs: the same config over several seeds.

Medical results vary a lot with the seed, so a claim should come with its spread: every
scalar metric of the per-seed ``results.json`` files is reported as ``<key>/mean`` and
``<key>/std`` (population std over seeds), with the seeds listed.
"""
import json
from pathlib import Path

import jax
import numpy as np

from medjax.data.pipeline import save_json


def over_seeds(per_seed: list[dict], config, workdir: Path) -> dict:
  seeds = [r["config"]["seed"] for r in per_seed]
  keys = [k for k, v in per_seed[0].items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)]
  out = {"seeds": seeds}
  for key in keys:
    values = np.array([r[key] for r in per_seed], np.float64)
    out[f"{key}/mean"] = float(values.mean())
    out[f"{key}/std"] = float(values.std())
  out["config"] = json.loads(config.to_json_best_effort())
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    save_json(workdir / "results.json", out)
  return out
