"""requirements.lock pins, with hashes, everything pyproject.toml asks for, and is what is
installed: the README's commands install from it, so CI tests exactly what a fresh machine
gets."""
import importlib.metadata
import tomllib

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

LOCK = REPO_ROOT / "requirements.lock"


def pins() -> dict[str, tuple[str, int]]:
  """``{name: (version, number of sha256 hashes)}`` from the lock."""
  out, name = {}, None
  for line in LOCK.read_text().splitlines():
    if line[:1].isalpha():
      req = Requirement(line.rstrip(" \\"))
      (spec,) = req.specifier
      assert spec.operator == "==", line
      name = canonicalize_name(req.name)
      out[name] = (spec.version, 0)
    elif "--hash=sha256:" in line:
      out[name] = (out[name][0], out[name][1] + 1)
  return out


def wanted() -> list[Requirement]:
  project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
  extras = project["optional-dependencies"]
  reqs = [Requirement(r) for r in project["dependencies"] + extras["test"] + extras["peers"]]
  return [r for r in reqs if r.marker is None or r.marker.evaluate(default_environment())]


def test_header_names_the_command_that_regenerates_it():
  header = LOCK.read_text().split("\n\n")[0]
  (command,) = [line for line in header.splitlines() if "pip-compile --" in line]
  for option in ("--generate-hashes", "--extra=test", "--extra=peers",
                 "--output-file=requirements.lock"):
    assert option in command.split(), (option, command)
  assert command.endswith(" pyproject.toml")


def test_every_requirement_is_pinned_within_its_range_with_hashes():
  locked = pins()
  assert all(n >= 1 for _, n in locked.values()), [k for k, (_, n) in locked.items() if not n]
  for req in wanted():
    name = canonicalize_name(req.name)
    assert name in locked, f"{req} is not in requirements.lock; regenerate it (see its header)"
    assert req.specifier.contains(locked[name][0], prereleases=True), (req, locked[name])


def test_the_installed_versions_are_the_locked_ones():
  drift = {}
  for name, (version, _) in pins().items():
    try:
      installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      drift[name] = (version, "not installed")
      continue
    if installed != version:
      drift[name] = (version, installed)
  assert not drift, (f"installed packages differ from requirements.lock (locked, installed): "
                     f"{drift}; install with the README's command")
