"""Entry point for every system: ``python -m medjax.main --config=configs/NAME.py[:ARGS] --workdir=DIR``.

Thin by design: flags, config, multi-process init, then dispatch on ``config.pipeline`` to
the one trainer that runs it. JAX, TensorFlow and the trainers are imported when a run
starts, so that ``--help`` and flag errors answer at once.
"""
import errno
import importlib
import logging as py_logging
import os
from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

from medjax import cli, distributed  # cli before TensorFlow: it quiets its start-up.

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/irma_cnn.py:smoke.",
                                  lock_config=True, flag_values=fv)
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and results.json go.",
                      flag_values=fv)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)
  # Multi-process runs (see medjax/distributed.py); unset flags fall back to $MEDJAX_*.
  flags.DEFINE_enum("distributed", os.environ.get("MEDJAX_DISTRIBUTED", "auto"),
                    list(distributed.MODES),
                    "auto: join jax.distributed when settings or a cluster launcher are found; "
                    "on: always (Cloud TPU VMs); off: single process.", flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator.",
                      flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Number of processes in the run.", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.",
                       flag_values=fv)
  flags.DEFINE_bool("huge_pages", True,
                    "Back the large host-memory blocks of XLA:CPU's steps with transparent huge "
                    "pages (glibc's glibc.malloc.hugetlb=1, set by re-executing the command; "
                    "see medjax/host_memory.py): far fewer page faults, same results. "
                    "No effect where glibc is older than 2.35 or the kernel's THP is 'never'.",
                    flag_values=fv)
  flags.DEFINE_bool("retain_host_memory", False,
                    "Keep freed host memory for reuse (glibc; see medjax/host_memory.py), so "
                    "XLA:CPU's per-step temporaries stop page-faulting; the process then keeps "
                    "its peak heap, which programs alternating large, different temporaries "
                    "can fragment without bound.", flag_values=fv)
  flags.DEFINE_string("local_device_ids", None, "Comma-separated local devices this process "
                      "drives (default: all, or its local rank's GPU under SLURM / Open MPI).",
                      flag_values=fv)


# config.pipeline -> the module whose train_and_evaluate(config, workdir) runs it.
PIPELINES = {
    "supervised": "medjax.train.trainer",
    "frozen_features": "medjax.features.pipeline",
}


# Errors of the storage rather than of the run: disk full, quota, permissions, read-only.
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                   errno.ENOTDIR}


def run(config, workdir: str) -> dict:
  """Runs ``config``; with ``config.num_seeds`` > 1, once per seed, then mean and std.

  Seed runs go to ``<workdir>/seed_<s>`` (each resumable on its own); the workdir's
  ``results.json`` then holds every metric's ``/mean`` and ``/std`` over the seeds.
  """
  if config.pipeline not in PIPELINES:
    raise cli.UserError(f"config.pipeline={config.pipeline!r}; expected one of {sorted(PIPELINES)}")
  from medjax.eval import results as results_lib
  module = importlib.import_module(PIPELINES[config.pipeline])
  from medjax.data import pipeline as data_pipeline
  num_seeds = config.get("num_seeds", 1)
  seeds = range(config.seed, config.seed + num_seeds)
  data_pipeline.check_same_source(config, [Path(workdir)] + [Path(workdir) / f"seed_{s}"
                                                              for s in seeds])
  if num_seeds <= 1:
    return module.train_and_evaluate(config, workdir)
  per_seed = []
  for seed in seeds:
    seed_config = config.copy_and_resolve_references()
    with seed_config.unlocked():
      seed_config.seed, seed_config.num_seeds = seed, 1
      if "features_dir" in seed_config and not seed_config.features_dir:
        # Extraction does not depend on the seed: the seeds share the workdir's features.
        seed_config.features_dir = str(Path(workdir) / "features")
    per_seed.append(module.train_and_evaluate(seed_config, Path(workdir) / f"seed_{seed}"))
  return results_lib.over_seeds(per_seed, config, Path(workdir))


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; every setting is a flag "
                        f"(--config.KEY=VALUE for config keys)")
  from medjax import host_memory
  if FLAGS.huge_pages and cli.started_as("medjax.main"):  # Re-executing is safe.
    host_memory.use_huge_pages()
  if FLAGS.retain_host_memory:  # Before JAX starts its threads.
    host_memory.retain_freed_blocks()
  distributed.initialize(FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                         num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                         local_device_ids=FLAGS.local_device_ids)
  # TensorFlow, which runs the input pipeline only, is set up before it starts (tf_runtime).
  import jax
  from medjax.data import tf_runtime
  from medjax.eval import writers
  tf_runtime.configure()
  # Every process runs the same program; process 0 alone speaks (the others only warn).
  leader = jax.process_index() == 0
  py_logging.getLogger("absl").setLevel(py_logging.INFO if leader else py_logging.WARNING)
  logging.set_verbosity(logging.INFO if leader else logging.WARNING)
  try:
    results = run(FLAGS.config, FLAGS.workdir)
  except OSError as e:
    if e.errno not in _STORAGE_ERRORS:
      raise
    # Writes are atomic (temp file + rename), so what was saved before is intact.
    raise SystemExit(
        f"medjax: cannot write {e.filename or FLAGS.workdir}: {e.strerror}. The run stopped; "
        f"checkpoints, features and results already in {FLAGS.workdir} are intact, and "
        f"rerunning the same command resumes from them once the problem is fixed.") from None
  if leader:
    summary = writers.headline(results)
    logging.info("Results: %s", summary)
    print("\n".join(f"{k}\t{v:.4f}" for k, v in sorted(summary.items())))


if __name__ == "__main__":
  cli.run(main, "medjax.main", define_flags)
