"""A workdir's results.json: a finished run is reused, never overwritten by another config."""
import json

import ml_collections
import pytest

from medjax import cli
from medjax.eval import results


def test_another_config_or_a_file_as_workdir_is_a_user_error(tmp_path):
  config = ml_collections.ConfigDict({"seed": 0, "model": {"name": "lenet"}})
  resolved, stored = results.open_workdir(tmp_path / "run", config)
  assert stored is None and resolved == {"seed": 0, "model": {"name": "lenet"}}
  (tmp_path / "run" / "results.json").write_text(json.dumps({"config": resolved, "x": 1}))
  assert results.open_workdir(tmp_path / "run", config)[1]["x"] == 1  # Finished: reused.
  config.model.name = "alexnet"
  with pytest.raises(cli.UserError, match=r"finished run with a different config .*\['model'\]"):
    results.open_workdir(tmp_path / "run", config)
  assert json.loads((tmp_path / "run" / "results.json").read_text())["x"] == 1
  (tmp_path / "file").write_text("")
  with pytest.raises(cli.UserError, match="--workdir=.*file is a file"):
    results.open_workdir(tmp_path / "file", config)
