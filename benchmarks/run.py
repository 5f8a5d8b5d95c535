"""The benchmark suite: medjax against its peers, case by case.

  python -m benchmarks.run [--quick] [--only NAME ...] --out FILE.json

prints a markdown table and writes a JSON list of records ``{"name", "medjax_seconds",
"peer", "peer_seconds", "ratio", ...}`` (``ratio`` = peer time / medjax time, both medians
of alternating repeats after warm-up; quality fields such as accuracy or inertia where a
result has a quality; ``images_per_s`` where a case processes images). ``--only`` keeps the
cases whose name starts with NAME (``--only train_step`` or ``--only train_step/lenet_ova``).
``--quick`` runs every case at the same sizes with fewer repeats, in about eight minutes
on two cores.
Each record also has the thread count, ``quick``, the device medjax ran on, the CPU
(model, ISA features such as AVX-512 and AMX, cores), the JAX and PyTorch versions and the load average before and after it. On a GPU the PyTorch peers run
there too and accelerator cases add ``fraction_of_peak`` (see ``timing.compare``).
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path

import jax
import torch

from benchmarks import (extraction, finetune, input_pipeline, kmeans, svm, timing,
                        train_step, vlad)
from medjax import host_memory, provenance

MODULES = (train_step, finetune, extraction, svm, kmeans, vlad, input_pipeline)


def all_cases(quick: bool) -> list[timing.Case]:
  return [case for module in MODULES for case in module.cases(quick)]


def run_cases(cases: list[timing.Case], *, quick: bool, out: Path | None = None) -> list[dict]:
  """Runs ``cases`` in order; returns their records (also written to ``out`` after each case,
  so an interrupted run keeps what it measured)."""
  context = {"threads": timing.configure_peers(), "quick": quick,
             "allocator": "retain" if host_memory.retaining() else "default",
             "device": jax.devices()[0].device_kind, "jax": jax.__version__,
             "torch": torch.__version__, "cpu": provenance.cpu()}
  records = []
  for case in cases:
    logging.info("running %s", case.name)
    try:
      result = case.run()
    except timing.SkipCase as skip:
      print(f"skipped {case.name}: {skip}", file=sys.stderr)
      continue
    for record in result if isinstance(result, list) else [result]:
      records.append({**record, **context})
    if out is not None:
      out.write_text(json.dumps(records, indent=1))
  return records


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="the same sizes, fewer repeats: every case in under 10 minutes")
  parser.add_argument("--only", nargs="+", metavar="NAME",
                      help="run only cases whose name starts with one of these")
  parser.add_argument("--out", type=Path, required=True, help="JSON file for the records")
  parser.add_argument("--allocator", choices=("default", "retain"), default="default",
                      help="default: glibc as it comes, under which both sides page-fault "
                      "their large temporaries anew every call; retain: medjax.host_memory's "
                      "policy (medjax.main --retain_host_memory), which the PyTorch peers "
                      "share, being in the same process")
  args = parser.parse_args(argv)
  if args.allocator == "retain":  # Before JAX starts its threads.
    host_memory.retain_freed_blocks()
  cases = all_cases(args.quick)
  if args.only:
    cases = [c for c in cases if c.name.startswith(tuple(args.only))]
    if not cases:
      parser.error(f"--only {args.only}: no such case; known: "
                   f"{[c.name for c in all_cases(args.quick)]}")
  print(f"{len(cases)} cases, {os.cpu_count()} cores, {jax.devices()[0].device_kind}, "
        f"load average {os.getloadavg()}", file=sys.stderr)
  records = run_cases(cases, quick=args.quick, out=args.out)
  print(timing.markdown_table(records))
  return records


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  main()
