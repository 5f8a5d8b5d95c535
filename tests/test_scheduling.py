"""The test files' order: longest first by the record, markers where it is silent."""
import json
import types

from tests import scheduling


def item(nodeid, slow=False):
  return types.SimpleNamespace(
      nodeid=nodeid, get_closest_marker=lambda name: object() if slow and name == "slow" else None)


def test_files_run_longest_first_and_keep_their_own_order(tmp_path, monkeypatch):
  record = tmp_path / "durations.json"
  record.write_text(json.dumps({"tests/a.py::one": 1.0, "tests/a.py::two": 2.0,
                                "tests/b.py::one": 50.0, "tests/c.py::one": 0.5}))
  monkeypatch.setattr(scheduling, "DURATIONS", record)
  items = [item("tests/a.py::one"), item("tests/a.py::two"), item("tests/b.py::one"),
           item("tests/c.py::one"), item("tests/c.py::new", slow=True),  # Unrecorded: 30 s.
           item("tests/d.py::new")]                                     # Unrecorded: 1 s.
  scheduling.pytest_collection_modifyitems(None, items)
  assert [i.nodeid for i in items] == [
      "tests/b.py::one", "tests/c.py::one", "tests/c.py::new", "tests/a.py::one",
      "tests/a.py::two", "tests/d.py::new"]


def test_a_missing_or_broken_record_falls_back_to_the_markers(tmp_path, monkeypatch):
  monkeypatch.setattr(scheduling, "DURATIONS", tmp_path / "absent.json")
  items = [item("tests/fast.py::x"), item("tests/fast.py::y"), item("tests/slow.py::z", slow=True)]
  scheduling.pytest_collection_modifyitems(None, items)
  assert [i.nodeid for i in items][0] == "tests/slow.py::z"
  (tmp_path / "broken.json").write_text("{not json")
  monkeypatch.setattr(scheduling, "DURATIONS", tmp_path / "broken.json")
  scheduling.pytest_collection_modifyitems(None, items)
  assert [i.nodeid for i in items][0] == "tests/slow.py::z"


def test_the_recorder_sums_phases_and_drops_removed_files(tmp_path, monkeypatch):
  record = tmp_path / "durations.json"
  record.write_text(json.dumps({"tests/gone.py::x": 9.0, "tests/kept.py::old": 3.0}))
  monkeypatch.setattr(scheduling, "DURATIONS", record)
  (tmp_path / "tests").mkdir()
  (tmp_path / "tests" / "kept.py").write_text("")
  recorder = scheduling._Recorder()
  for phase_seconds in (0.25, 1.5, 0.25):  # setup, call, teardown
    recorder.pytest_runtest_logreport(types.SimpleNamespace(nodeid="tests/kept.py::new",
                                                            duration=phase_seconds))
  session = types.SimpleNamespace(config=types.SimpleNamespace(rootpath=tmp_path))
  recorder.pytest_sessionfinish(session)
  assert json.loads(record.read_text()) == {"tests/kept.py::new": 2.0, "tests/kept.py::old": 3.0}
