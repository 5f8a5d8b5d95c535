"""Runs the longest test files first, so two xdist workers finish together.

``--dist loadfile`` hands out whole files; by default xdist orders them by how many tests
they hold, which put the few-but-long subprocess files (a kill-and-resume, the
multi-process run) last, one worker running them alone for minutes while the other sat
idle. Here files are ordered by their measured seconds (``tests/durations.json``, written
by ``--record-durations``; a file it does not know is estimated from its markers), and
xdist keeps that order (``--no-loadscope-reorder`` in pyproject's addopts). The order
changes only when tests run, never what they check.
"""
import json
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
# Estimates for tests not in the record: a slow test starts subprocesses or trains.
SLOW_ESTIMATE_S, FAST_ESTIMATE_S = 30.0, 1.0


def pytest_addoption(parser):
  parser.addoption("--record-durations", action="store_true",
                   help="write each test's measured seconds to tests/durations.json, the "
                        "record that orders test files longest first")


def _recorded() -> dict[str, float]:
  try:
    return json.loads(DURATIONS.read_text())
  except (OSError, ValueError):
    return {}


def _seconds(item, recorded: dict[str, float]) -> float:
  if item.nodeid in recorded:
    return recorded[item.nodeid]
  return SLOW_ESTIMATE_S if item.get_closest_marker("slow") else FAST_ESTIMATE_S


@pytest.hookimpl(trylast=True)  # After -m/-k deselection: only selected tests count.
def pytest_collection_modifyitems(config, items):
  recorded = _recorded()
  files: dict[str, list] = {}
  for item in items:
    files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
  cost = {path: sum(_seconds(i, recorded) for i in tests) for path, tests in files.items()}
  # Sorted by cost, then path: every worker must collect the same order.
  order = sorted(files, key=lambda path: (-cost[path], path))
  items[:] = [item for path in order for item in files[path]]


class _Recorder:
  """Sums each test's setup, call and teardown seconds (on the xdist controller, which
  sees every worker's reports) and merges them into the record at the end."""

  def __init__(self):
    self.seconds: dict[str, float] = {}

  def pytest_runtest_logreport(self, report):
    self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

  def pytest_sessionfinish(self, session):
    root = Path(session.config.rootpath)
    merged = {nodeid: s for nodeid, s in _recorded().items()
              if (root / nodeid.split("::", 1)[0]).exists()}  # Files since removed drop out.
    merged.update({nodeid: round(s, 2) for nodeid, s in self.seconds.items()})
    DURATIONS.write_text(json.dumps(dict(sorted(merged.items())), indent=0) + "\n")


def pytest_configure(config):
  if config.getoption("--record-durations") and not hasattr(config, "workerinput"):
    config.pluginmanager.register(_Recorder(), "medjax-record-durations")
