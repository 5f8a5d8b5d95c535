"""Joins this process to JAX's multi-process runtime, before anything touches a device.

One run spans several processes (a TPU pod slice, GPU nodes, or ``launch/local.sh`` on one
CPU box) through ``jax.distributed.initialize``; after it, ``jax.devices()`` lists every
device of every process and the one global mesh of ``medjax.parallel`` spans them.

Where the settings come from, first match wins for each:
  1. flags ``--coordinator_address``, ``--num_processes``, ``--process_id``,
     ``--local_device_ids``;
  2. ``$MEDJAX_COORDINATOR``, ``$MEDJAX_NUM_PROCESSES``, ``$MEDJAX_PROCESS_ID``,
     ``$MEDJAX_LOCAL_DEVICE_IDS`` (comma-separated);
  3. JAX's own cluster detection (SLURM, Open MPI, Cloud TPU) for whatever is left.
Under SLURM or Open MPI on GPUs, JAX gives each process the one GPU of its local rank;
a process driving all GPUs of its node must name them in ``local_device_ids``.

``mode`` decides whether to initialise at all: ``"auto"`` does when any setting is given
or a multi-process launcher is visible in the environment (an ``srun`` step of several
tasks, an ``mpirun`` world of several ranks, a multi-host GKE TPU slice); ``"on"`` always
does (Cloud TPU VMs, where JAX asks the metadata server); ``"off"`` never does. A plain
``python -m medjax.main`` therefore stays a single process with no coordinator.
"""
import os

MODES = ("auto", "on", "off")
ENV = {"coordinator_address": "MEDJAX_COORDINATOR", "num_processes": "MEDJAX_NUM_PROCESSES",
       "process_id": "MEDJAX_PROCESS_ID", "local_device_ids": "MEDJAX_LOCAL_DEVICE_IDS"}
_PARSE = {"coordinator_address": str, "num_processes": int, "process_id": int,
          "local_device_ids": lambda ids: [int(i) for i in str(ids).split(",")]}


def settings(coordinator_address: str | None = None, num_processes: int | None = None,
             process_id: int | None = None, local_device_ids: str | None = None,
             environ=os.environ) -> dict:
  """The explicitly given settings (arguments, else ``$MEDJAX_*``); JAX detects the rest.

  ``local_device_ids`` is a comma-separated string, as in the environment.
  """
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id, "local_device_ids": local_device_ids}
  out = {}
  for key, value in given.items():
    raw = value if value is not None else environ.get(ENV[key]) or None
    if raw is not None:
      out[key] = _PARSE[key](raw)
  return out


def launcher_detected(environ=os.environ) -> bool:
  """Whether a multi-process launcher started this process (cheap checks, no network)."""
  return (int(environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1
          or int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
          or "," in environ.get("TPU_WORKER_HOSTNAMES", ""))


def initialize(mode: str = "auto", **explicit) -> bool:
  """Initialises the distributed runtime if ``mode`` asks for it; returns whether it did."""
  if mode not in MODES:
    raise ValueError(f"distributed mode {mode!r}; expected one of {MODES}")
  given = settings(**explicit)
  if mode == "off":
    if given:
      raise ValueError(f"distributed mode 'off' contradicts the settings {sorted(given)}")
    return False
  if mode == "auto" and not given and not launcher_detected():
    return False
  # CPU processes exchange gradients over gloo; older jax releases default to no
  # cross-process CPU collectives at all. GPU and TPU backends ignore this option.
  import jax  # Here, not at the top: `--help` and flag errors need no JAX.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**given)
  return True
