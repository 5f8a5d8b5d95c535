"""A user's bad input to a command (a flag out of range, an --out that cannot be written, a
folder where an image is expected, a typo) is one UserError or one flag error, before any
work and without losing files; every check here runs before a finished run is needed."""
import csv
import socket
import types

import numpy as np
import pytest
from absl import flags
from PIL import Image

from medjax import classify, cli, compare, describe, ensemble, inference, predict, retrieve, serve
from medjax.explain import __main__ as explain


def parsed(monkeypatch, module, *args) -> list[str]:
  """``module.FLAGS`` as ``python -m`` parses ``args`` (a fresh set: tests import several
  commands); returns the argv its ``main`` gets."""
  fv = flags.FlagValues()
  module.define_flags(fv)
  argv = cli.parse(["medjax.x", *map(str, args)], "medjax.x", fv)
  monkeypatch.setattr(module, "FLAGS", fv)
  return argv


def refused_flag(capsys, module, *args) -> str:
  """The one error line a bad flag value gets, exit status 2."""
  fv = flags.FlagValues()
  module.define_flags(fv)
  with pytest.raises(SystemExit) as exit_:
    cli.parse(["medjax.x", *map(str, args)], "medjax.x", fv)
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and err.startswith("medjax.x: error: ")
  return err


@pytest.fixture
def image(tmp_path):
  path = tmp_path / "img.png"
  Image.fromarray(np.full((40, 40), 90, np.uint8)).save(path)
  return path


@pytest.fixture
def notes(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("not an image\n")
  return path


@pytest.mark.parametrize("module, args", [
    (predict, ["--workdir=w", "--batch_size=0"]), (retrieve, ["--workdir=w", "--k=0"]),
    (retrieve, ["--workdir=w", "--k=-3"]), (classify, ["--k=0"]),
    (classify, ["--k=-2"]), (classify, ["--k=1001"]),
    (serve, ["--workdir=w", "--port=70000"]), (serve, ["--workdir=w", "--port=-1"])])
def test_flag_values_out_of_range_are_one_line(capsys, module, args):
  assert args[-1].split("=")[0] in refused_flag(capsys, module, *args)


def test_predict_refuses_an_out_it_cannot_write_before_reading(monkeypatch, tmp_path, image,
                                                                notes):
  (tmp_path / "folder").mkdir()
  argv = parsed(monkeypatch, predict, f"--workdir={tmp_path / 'none'}",
                f"--out={tmp_path / 'folder'}", image)
  with pytest.raises(cli.UserError, match="is a folder"):
    predict.main(argv)
  argv = parsed(monkeypatch, predict, f"--workdir={tmp_path / 'none'}",
                f"--out={notes / 'p.csv'}", image)
  with pytest.raises(cli.UserError, match="notes.txt is a file"):
    predict.main(argv)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "img.png", "notes.txt"]


def test_predict_with_no_readable_input_writes_the_csv_and_fails(monkeypatch, tmp_path, notes):
  run = types.SimpleNamespace(class_names=("a", "b"), multi_label=False)
  monkeypatch.setattr(inference, "load", lambda workdir: run)
  out = tmp_path / "p.csv"
  argv = parsed(monkeypatch, predict, f"--workdir={tmp_path}", f"--out={out}", notes,
                tmp_path / "gone.png")
  with pytest.raises(cli.UserError, match=r"none of the 2 .*notes.txt is not a readable image"):
    predict.main(argv)
  rows = list(csv.DictReader(out.open()))
  assert len(rows) == 2 and all(r["error"] and not r["predicted"] for r in rows)


@pytest.mark.parametrize("module, args", [(predict, ["IMAGE"]), (retrieve, ["--split=test"]),
                                          (retrieve, ["IMAGE"]),
                                          (explain, ["--out=maps", "IMAGE"]), (serve, [])])
def test_a_workdir_that_is_a_file_is_named_as_such(monkeypatch, module, args, notes, image):
  args = [image if a == "IMAGE" else a for a in args]
  argv = parsed(monkeypatch, module, f"--workdir={notes}", *args)
  with pytest.raises(cli.UserError, match="is a file; give the workdir of a finished run"):
    module.main(argv)


def one_line_error(capsys, module, argv) -> str:
  """What ``python -m`` prints for ``module.main(argv)``'s UserError: one line, exit 2."""
  with pytest.raises(SystemExit) as exit_:
    cli.guard(module.main, "medjax.x")(argv)
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and err.startswith("medjax.x: error: ")
  return err


def test_retrieve_takes_query_images_as_arguments_not_with_split(monkeypatch, capsys, tmp_path,
                                                                  image):
  """As predict, explain and classify take images: as arguments (--query is gone)."""
  argv = parsed(monkeypatch, retrieve, f"--workdir={tmp_path}", "--split=test", image)
  assert argv[1:] == [str(image)]
  err = one_line_error(capsys, retrieve, argv)
  assert "give query images or --split=test, not both" in err
  argv = parsed(monkeypatch, retrieve, f"--workdir={tmp_path}")
  assert "give query IMAGE files, --split=test or --add=IMAGES" in one_line_error(
      capsys, retrieve, argv)
  assert "Unknown command line flag 'query'" in refused_flag(
      capsys, retrieve, f"--workdir={tmp_path}", f"--query={image}")
  text = cli.usage(retrieve.__doc__, retrieve.define_flags)
  assert "repeat this option" not in text and ".;" not in text
  assert "python -m medjax.retrieve --workdir=W [--k=10] IMAGE ..." in text
  assert "--query" not in text and "--k: Neighbours printed per query image." in text


def test_split_reads_the_same_in_every_command():
  for module in (retrieve, compare):
    own = flags.FlagValues()
    module.define_flags(own)
    assert own["split"].help.startswith("Split of the run"), module.__name__


def test_classify_names_unreadable_images_and_weights(tmp_path, image):
  truncated = tmp_path / "cut.png"
  truncated.write_bytes(image.read_bytes()[:60])
  with pytest.raises(cli.UserError, match="cut.png is not an image .*truncated"):
    classify._open(truncated)
  with pytest.raises(cli.UserError, match="is a folder; give image files"):
    classify._open(tmp_path)
  with pytest.raises(cli.UserError, match="--weights=.*nosuch.pth: .*not found"):
    classify.classify("efficientnet_lite0", str(tmp_path / "nosuch.pth"), [image])
  (tmp_path / "notes.pth").write_text("not weights\n")
  with pytest.raises(cli.UserError, match="--weights=.*notes.pth: "):
    classify.classify("efficientnet_lite0", str(tmp_path / "notes.pth"), [image])


def test_describe_speaks_in_its_flags(monkeypatch, tmp_path, notes):
  for dataset, expected in ((notes, "not a .csv"), ("chest_xrays", "neither a known")):
    argv = parsed(monkeypatch, describe, f"--dataset={dataset}", f"--tfds_dir={tmp_path}")
    with pytest.raises(cli.UserError, match=expected) as error:
      describe.main(argv)
    assert "--dataset=" in str(error.value) and "config.data" not in str(error.value)
  text = describe.in_flags("9 bad file(s); set config.data.on_bad_file='skip' to skip:")
  assert text == "9 bad file(s); set --on_bad_file=skip to skip:"


def test_a_long_list_of_bad_files_names_the_first_and_counts_the_rest(tmp_path):
  from medjax.data import validate
  report = validate.Report()
  for i in range(validate.LISTED + 4):
    report.add(validate.Problem(str(tmp_path / f"f{i}.png"), "is missing"), None)
  with pytest.raises(validate.BadDataError) as error:
    report.raise_or_skip("fail", "the train split")
  lines = str(error.value).splitlines()
  assert lines[0].startswith(f"{validate.LISTED + 4} bad file(s) in the train split")
  assert len(lines) == validate.LISTED + 2 and lines[-1] == "  ... and 4 more"
  assert report.raise_or_skip("skip", "the train split") == {
      str(tmp_path / f"f{i}.png") for i in range(validate.LISTED + 4)}


def test_serve_refuses_a_port_in_use_before_announcing_it():
  taken = socket.socket()
  taken.bind(("127.0.0.1", 0))
  taken.listen()
  port = taken.getsockname()[1]
  try:
    with pytest.raises(cli.UserError, match=f"port {port} is in use"):
      serve.listen("127.0.0.1", port)
  finally:
    taken.close()
  free = serve.listen("127.0.0.1", 0)
  assert free.getsockname()[1] > 0
  free.close()


def test_explain_refuses_folders_a_file_out_and_names_that_collide(monkeypatch, tmp_path, image,
                                                                   notes):
  for folder in ("a", "b"):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "x.png").write_bytes(image.read_bytes())
  cases = [([f"--out={tmp_path / 'maps'}", tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"],
            "would both be written as"),
           ([f"--out={tmp_path / 'maps'}", tmp_path / "a"], "is a folder; medjax.explain takes"),
           ([f"--out={notes}", image], "notes.txt is a file")]
  for args, expected in cases:
    argv = parsed(monkeypatch, explain, f"--workdir={tmp_path / 'none'}", *args)
    with pytest.raises(cli.UserError, match=expected):
      explain.main(argv)
  assert not (tmp_path / "maps").exists()


def test_compare_refuses_a_file_out_and_lists_the_splits_a_run_has(monkeypatch, tmp_path, notes):
  runs = [tmp_path / "r1", tmp_path / "r2"]
  for run in runs:
    (run / "predictions").mkdir(parents=True)
    for split in ("test", "val"):
      (run / "predictions" / f"{split}.csv").write_text("id\n")
  workdirs = f"--workdirs={runs[0]},{runs[1]}"
  argv = parsed(monkeypatch, compare, workdirs, f"--out={notes}")
  with pytest.raises(cli.UserError, match="notes.txt is a file"):
    compare.main(argv)
  argv = parsed(monkeypatch, compare, workdirs, "--split=tset")
  with pytest.raises(cli.UserError, match=r"--split=tset: .*its splits are \['test', 'val'\]"):
    compare.main(argv)


def test_compare_names_its_runs_with_workdirs_as_ensemble_does(monkeypatch, capsys, tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  # Runs as arguments, the old usage: one line naming the flag to use instead.
  argv = parsed(monkeypatch, compare, a, b)
  assert one_line_error(capsys, compare, argv) == (
      f"medjax.x: error: give the runs as --workdirs={a},{b}, not as arguments\n")
  argv = parsed(monkeypatch, compare, f"--workdirs={a}", b)
  assert f"give the runs as --workdirs={a},{b}, not" in one_line_error(capsys, compare, argv)
  cases = [([], "--workdirs is required: give --workdirs=W1,W2"),
           ([f"--workdirs={a}"], "give at least two finished runs"),
           ([f"--workdirs={a}", f"--workdirs={b}"], "repeated --workdirs keeps only its last"),
           ([f"--workdirs={a},{tmp_path / 'x' / '..' / 'a'}"], "are the same run")]
  for module in (compare, ensemble):  # The same rules for both (cli.finished_runs).
    out = [f"--workdir={tmp_path / 'ens'}"] if module is ensemble else []
    for args, expected in cases:
      argv = parsed(monkeypatch, module, *args, *out)
      assert expected in one_line_error(capsys, module, argv), (module.__name__, args)
    argv = parsed(monkeypatch, module, a, b, *out)
    assert f"give the runs as --workdirs={a},{b}" in one_line_error(capsys, module, argv)
  for module in (compare, ensemble):
    own = flags.FlagValues()
    module.define_flags(own)
    assert own["workdirs"].flag_type() == "comma separated list of strings", module.__name__
  text = cli.usage(compare.__doc__, compare.define_flags)
  assert "python -m medjax.compare --workdirs=W1,W2[,...]" in text
  assert "--workdirs: Finished runs to compare (two or more). (required)" in text
