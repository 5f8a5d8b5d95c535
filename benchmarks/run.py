"""The benchmark suite: medjax against its peers, case by case.

  python -m benchmarks.run [--quick] [--only=NAME[,NAME...]] --out=FILE.json

prints a markdown table and writes a JSON list of records ``{"name", "medjax_seconds",
"peer", "peer_seconds", "ratio", ...}`` (``ratio`` = peer time / medjax time, both medians
of alternating repeats after warm-up; quality fields such as accuracy or inertia where a
result has a quality; ``images_per_s`` where a case processes images). ``--only`` keeps the
cases whose name starts with NAME (``--only train_step`` or ``--only train_step/lenet_ova``).
``--quick`` runs every case at the same sizes with fewer repeats. Each case runs in a
process of its own (``--noisolate`` runs them all in this one), so that no case is timed
on the heap and threads an earlier case left behind (docs/performance.md, Zen 3).
Each record also has the thread count, ``quick``, the device medjax ran on, the CPU
(model, ISA features such as AVX-512 and AMX, cores), the JAX and PyTorch versions and the load average before and after it. On a GPU the PyTorch peers run
there too and accelerator cases add ``fraction_of_peak`` (see ``timing.compare``).
"""
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import flags

from medjax import cli
from medjax import host_memory

FLAGS = flags.FLAGS

# The case modules import JAX and PyTorch; loaded when cases are listed, so --help is quick.
MODULES = ("train_step", "finetune", "extraction", "svm", "kmeans", "vlad", "input_pipeline",
           "retrieval_scale")


def all_cases(quick: bool) -> list:
  """Every case (a ``benchmarks.timing.Case``) of every module, in ``MODULES`` order."""
  modules = [importlib.import_module(f"benchmarks.{name}") for name in MODULES]
  return [case for module in modules for case in module.cases(quick)]


def run_cases(cases: list, *, quick: bool, out: Path | None = None) -> list[dict]:
  """Runs ``cases`` in order; returns their records (also written to ``out`` after each case,
  so an interrupted run keeps what it measured)."""
  import jax
  import torch

  from benchmarks import timing
  from medjax import provenance
  context = {"threads": timing.configure_peers(), "quick": quick,
             "allocator": host_memory.policy(),
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


def run_isolated(names: list[str], *, quick: bool, allocator: str, out: Path) -> list[dict]:
  """Runs each case named in ``names`` in a fresh ``python -m benchmarks.run --case=NAME``
  and returns their records (also written to ``out`` after each case). A case that fails
  stops the run with its error; a skipped one is reported by its process and left out."""
  records = []
  for name in names:
    with tempfile.TemporaryDirectory(prefix="medjax-bench-") as tmp:
      one = Path(tmp) / "case.json"
      command = [sys.executable, "-m", "benchmarks.run", f"--case={name}", f"--out={one}",
                 f"--allocator={allocator}", "--quick" if quick else "--noquick"]
      done = subprocess.run(command, stdout=subprocess.DEVNULL)
      if done.returncode != 0:
        raise cli.UserError(f"benchmark case {name} failed (exit {done.returncode}); its "
                            f"error is above; the records so far are in {out}")
      records += json.loads(one.read_text()) if one.exists() else []
    out.write_text(json.dumps(records, indent=1))
  return records


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_bool("quick", False, "The same sizes with fewer repeats.", flag_values=fv)
  flags.DEFINE_list("only", [], "Run only the cases whose name starts with one of these.",
                    flag_values=fv)
  flags.DEFINE_string("out", None, "JSON file for the records.", required=True,
                      flag_values=fv)
  flags.DEFINE_enum("allocator", "default", ["default", "retain", "huge_pages"],
                    "default: glibc as it comes, under which both sides page-fault their "
                    "large temporaries anew every call; retain: medjax.host_memory's policy "
                    "(medjax.main --retain_host_memory); huge_pages: transparent huge pages "
                    "(medjax.main's default, --huge_pages). The PyTorch peers share the policy, "
                    "being in the same process.", flag_values=fv)
  flags.DEFINE_bool("isolate", True, "Run each case in a process of its own, so that no "
                    "case inherits another's heap, threads or caches.", flag_values=fv)
  flags.DEFINE_string("case", None, "Run exactly this one case in this process (what "
                      "--isolate starts for each case).", flag_values=fv)


def main(argv) -> None:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; name cases with --only=A,B")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
  if FLAGS.allocator == "retain":  # Before JAX starts its threads.
    host_memory.retain_freed_blocks()
  elif FLAGS.allocator == "huge_pages":
    host_memory.use_huge_pages()
  cases = all_cases(FLAGS.quick)
  if FLAGS.case:
    cases = [c for c in cases if c.name == FLAGS.case]
    if not cases:
      raise cli.UserError(f"--case={FLAGS.case}: no such case; known: "
                          f"{[c.name for c in all_cases(FLAGS.quick)]}")
  elif FLAGS.only:
    cases = [c for c in cases if c.name.startswith(tuple(FLAGS.only))]
    if not cases:
      raise cli.UserError(f"--only={','.join(FLAGS.only)}: no such case; known: "
                          f"{[c.name for c in all_cases(FLAGS.quick)]}")
  import jax

  from benchmarks import timing
  print(f"{len(cases)} cases, {os.cpu_count()} cores, {jax.devices()[0].device_kind}, "
        f"load average {os.getloadavg()}", file=sys.stderr)
  if FLAGS.isolate and not FLAGS.case:
    records = run_isolated([c.name for c in cases], quick=FLAGS.quick,
                           allocator=FLAGS.allocator, out=Path(FLAGS.out))
  else:
    records = run_cases(cases, quick=FLAGS.quick, out=Path(FLAGS.out))
  print(timing.markdown_table(records))


if __name__ == "__main__":
  cli.run(main, "benchmarks.run", define_flags)
