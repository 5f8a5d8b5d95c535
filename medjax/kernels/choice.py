"""Which ops a model runs: medjax's XLA:CPU forms or the plain reference ops.

The choice is a model attribute (``kernels``, from ``config.model.kernels``), so that a run
says what it computes and a test can ask for the reference ops without patching anything.
Both choices compute the same function up to float32 round-off; they differ in speed.
"""
import jax

XLA_CPU = "xla_cpu"      # The forms below, chosen per op shape; fastest on XLA:CPU.
REFERENCE = "reference"  # lax.conv_general_dilated and flax's pools, as written.
AUTO = "auto"            # XLA_CPU on a CPU backend, else REFERENCE: resolved at build time.
CHOICES = (AUTO, XLA_CPU, REFERENCE)


def resolve(choice: str = AUTO, backend: str | None = None) -> str:
  """``choice`` as XLA_CPU or REFERENCE; AUTO reads ``backend`` (default: JAX's default).

  Call it where a model is built (``registry.get_model`` does), outside any trace, so that
  the choice is fixed in the model's attributes before anything is compiled.
  """
  if choice not in CHOICES:
    raise ValueError(f"kernels={choice!r}; expected one of {CHOICES}")
  if choice != AUTO:
    return choice
  return XLA_CPU if (backend or jax.default_backend()) == "cpu" else REFERENCE


def fast(choice: str) -> bool:
  """True for XLA_CPU, False for REFERENCE; anything else (AUTO too) is an error, so that
  no op decides by itself at trace time."""
  if choice == XLA_CPU:
    return True
  if choice == REFERENCE:
    return False
  raise ValueError(f"kernels={choice!r}: an op needs {XLA_CPU!r} or {REFERENCE!r} "
                   f"(resolve {AUTO!r} with medjax.kernels.resolve where the model is built)")
