"""Datasets given by path: folders with and without splits, CSVs (multi-label, optional
split), DICOM inside them, mixed bit depths and colour; prepared copies keyed by source."""
import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medjax import cli, parallel
from medjax.data import builders, validate
from medjax.data.builders import by_path
from medjax.data.pipeline import InputPipeline
from tests.conftest import tiny_config

from standins import examples

CLASSES = ("cyst", "normal", "tumour")  # Sorted on purpose: the recorded order is by name.


def write_study(root: Path, per_split: dict[str, int], size: int = 24, splits: bool = True,
                seed: int = 0) -> list[tuple[str, str, str]]:
  """Grey PNGs of three classes (8-bit, one 16-bit and one RGB per class and split);
  returns the ``(relative path, label, split)`` rows."""
  rng = np.random.default_rng(seed)
  rows = []
  for split, n in per_split.items():
    for label, name in enumerate(CLASSES):
      folder = root / split / name if splits else root / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(n):
        img = rng.integers(0, 50, (size, size)).astype(np.uint8) + np.uint8(60 * label)
        path = folder / f"{split}_{name}_{i:02d}.png"
        if i == 0:
          Image.fromarray(img.astype(np.uint16) * 257).save(path)
        elif i == 1:
          Image.fromarray(np.stack([img] * 3, -1)).save(path)
        else:
          Image.fromarray(img).save(path)
        rows.append((str(path.relative_to(root)), name, split))
  return rows


def write_csv(path: Path, rows, with_split: bool = True) -> Path:
  with path.open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "label", "split"] if with_split else ["path", "label"])
    for p, label, split in rows:
      w.writerow([p, label, split] if with_split else [p, label])
  return path


def test_folder_with_splits_takes_them_as_they_are(tmp_path):
  rows = write_study(tmp_path / "study", {"train": 4, "val": 2, "test": 3})
  builder = builders.get_builder(str(tmp_path / "study"), tfds_dir=str(tmp_path / "tfds"))
  assert builder.class_names() == CLASSES
  assert {s: builder.info.splits[s].num_examples for s in ("train", "val", "test")} == {
      "train": 12, "val": 6, "test": 9}
  got = examples(builder, "test")
  want = {p: CLASSES.index(label) for p, label, split in rows if split == "test"}
  assert got == want
  assert builder.info.metadata["image_kinds"] == {"grayscale": 9, "grayscale16": 9, "rgb": 9}


def test_csv_multi_label_and_errors(tmp_path):
  write_study(tmp_path, {"train": 3}, splits=False)
  table = tmp_path / "labels.csv"
  with table.open("w") as f:
    f.write("path,label,split\n")
    f.write("cyst/train_cyst_02.png,cyst|tumour,train\n")
    f.write("normal/train_normal_02.png,normal,test\n")
    f.write("tumour/train_tumour_02.png,tumour,train\n")
    f.write("normal/train_normal_01.png,normal,train\n")
  builder = builders.get_builder(str(table), tfds_dir=str(tmp_path / "tfds"))
  assert "labels" in builder.info.features and builder.class_names() == CLASSES
  assert examples(builder, "train", "labels")["cyst/train_cyst_02.png"] == [1.0, 0.0, 1.0]
  bad = tmp_path / "bad.csv"
  bad.write_text("file,label\nx.png,cyst\n")
  with pytest.raises(cli.UserError, match="lacks the column"):
    builders.get_builder(str(bad), tfds_dir=str(tmp_path / "tfds"))
  bad.write_text("path,label,split\ncyst/train_cyst_02.png,cyst,training\n")
  with pytest.raises(cli.UserError, match="'training' is not one of"):
    builders.get_builder(str(bad), tfds_dir=str(tmp_path / "tfds"))
  bad.write_text("path,label,split\ncyst/nothere.png,cyst,train\n"
                 "normal/train_normal_02.png,normal,train\n")
  with pytest.raises(validate.BadDataError, match="nothere.png: is missing"):
    builders.get_builder(str(bad), tfds_dir=str(tmp_path / "tfds"))
  for missing in (str(tmp_path / "nowhere"), "no_such_dataset"):
    with pytest.raises(cli.UserError, match="nowhere|neither a known"):
      builders.get_builder(missing, tfds_dir=str(tmp_path / "tfds"))


def test_folder_without_splits_is_split_stratified_and_written(tmp_path):
  write_study(tmp_path / "study", {"all": 10}, splits=False)
  config = tiny_config(tmp_path, tmp_path / "tfds", **{"data.name": str(tmp_path / "study"),
                                                       "data.val_fraction": 0.0})
  data = InputPipeline(config, tmp_path / "work", parallel.make_mesh())
  assert data.info.split_sizes == {"train": 21, "val": 3, "test": 6}  # 7/1/2 per class.
  with (tmp_path / "work" / "data_split.csv").open() as f:
    table = list(csv.DictReader(f))
  assert len(table) == 30
  per_class_test = {c: sum(r["split"] == "test" and r["label"] == c for r in table)
                    for c in CLASSES}
  assert per_class_test == {c: 2 for c in CLASSES}
  # The written file is itself a dataset with the same split and the same example ids
  # (a run on it pairs with the folder's run in compare).
  again = builders.get_builder(str(tmp_path / "work" / "data_split.csv"),
                               tfds_dir=str(tmp_path / "tfds"))
  assert again.info.splits["test"].num_examples == 6
  assert examples(again, "test") == examples(data.builder, "test")
  other_seed = by_path.stratified_split([r["path"] for r in table],
                                        [r["label"] for r in table], (0.7, 0.1, 0.2), 1)
  assert other_seed != {r["path"]: r["split"] for r in table}


def test_dicom_inside_a_folder_by_path(tmp_path):
  from test_dicom_folder import write_dicom
  write_study(tmp_path / "study", {"train": 2, "test": 2})
  pixels = (np.arange(24 * 24, dtype=np.uint16) * 7).reshape(24, 24)
  write_dicom(tmp_path / "study" / "train" / "cyst" / "scan.dcm", pixels)
  builder = builders.get_builder(str(tmp_path / "study"), tfds_dir=str(tmp_path / "tfds"))
  assert "train/cyst/scan.dcm" in examples(builder, "train")
  assert builder.info.metadata["image_kinds"]["grayscale16"] == 7


def test_prepared_copy_follows_its_source(tmp_path):
  write_study(tmp_path / "study", {"train": 2, "test": 2})
  tfds_dir = str(tmp_path / "tfds")
  first = builders.get_builder(str(tmp_path / "study"), tfds_dir=tfds_dir)
  same = builders.get_builder(str(tmp_path / "study"), tfds_dir=tfds_dir)
  assert same.source_key == first.source_key and same.data_dir == first.data_dir
  extra = tmp_path / "study" / "train" / "cyst" / "added.png"
  Image.fromarray(np.zeros((24, 24), np.uint8)).save(extra)
  edited = builders.get_builder(str(tmp_path / "study"), tfds_dir=tfds_dir)
  assert edited.source_key != first.source_key
  assert edited.info.splits["train"].num_examples == 7
  os.utime(extra, ns=(1, 1))  # Same files, one rewritten: prepared again.
  assert builders.get_builder(str(tmp_path / "study"), tfds_dir=tfds_dir).source_key not in (
      first.source_key, edited.source_key)


def test_named_dataset_from_another_copy_is_prepared_and_checked(shared_data, tmp_path):
  """chest_xray prepared from the shared data, then from a copy with four corrupt files."""
  clean, salted = tmp_path / "clean", tmp_path / "salted"
  for root in (clean, salted):
    for split in ("train", "val", "test"):
      for name in ("NORMAL", "PNEUMONIA"):
        folder = root / "chest_xray" / split / name
        folder.mkdir(parents=True)
        for src in sorted((shared_data / "chest_xray" / split / name).glob("*.jpeg"))[:3]:
          (folder / src.name).symlink_to(src)
  corrupt = ["train/NORMAL/bad1.jpeg", "train/PNEUMONIA/bad2.jpeg", "val/NORMAL/bad3.jpeg",
             "test/PNEUMONIA/bad4.jpeg"]
  good = next((clean / "chest_xray" / "train" / "NORMAL").iterdir()).read_bytes()
  for i, rel in enumerate(corrupt):
    (salted / "chest_xray" / rel).write_bytes(good[:len(good) // 3] if i % 2 else b"text")
  tfds_dir = str(tmp_path / "tfds")
  builder = builders.get_builder("chest_xray", manual_dir=str(clean), tfds_dir=tfds_dir)
  assert builder.info.splits["test"].num_examples == 6
  with pytest.raises(validate.BadDataError) as error:
    builders.get_builder("chest_xray", manual_dir=str(salted), tfds_dir=tfds_dir)
  assert "4 bad file(s)" in str(error.value)
  for rel in corrupt:
    assert rel in str(error.value)
  shutil.rmtree(salted)
  again = builders.get_builder("chest_xray", manual_dir=str(clean), tfds_dir=tfds_dir)
  assert again.data_dir == builder.data_dir


def test_a_file_that_is_not_a_csv_is_named_as_such(tmp_path):
  notes = tmp_path / "notes.txt"
  notes.write_text("not a dataset")
  with pytest.raises(by_path.DatasetError, match="notes.txt is a file but not a .csv"):
    builders.get_builder(str(notes), tfds_dir=str(tmp_path / "tfds"))
  with pytest.raises(by_path.DatasetError, match="does not exist"):
    builders.get_builder(str(tmp_path / "nothing"), tfds_dir=str(tmp_path / "tfds"))


def _png(path: Path, value: int = 90) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((24, 24), value, np.uint8)).save(path)
  return path


def test_class_folders_holding_patient_folders_keep_their_class_and_every_image(tmp_path):
  """<class>/<patient>/<image> once read the classes as splits and the patients as classes."""
  for name in ("healthy", "sick"):
    for patient in range(3):
      for i in range(2):
        _png(tmp_path / name / f"patient{patient}" / f"x{i}.png")
  _png(tmp_path / "sick" / "y.png")
  (tmp_path / "sick" / "._y.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS.
  (tmp_path / "sick" / ".DS_Store").write_bytes(b"\x00")
  builder = by_path.ByPath(source=str(tmp_path), data_dir=str(tmp_path / "tfds"))
  assert builder.class_names() == ("healthy", "sick") and builder.assigned_splits
  ids = {r["id"]: r["labels"] for r in builder._rows}
  assert len(ids) == 13 and ids["sick/patient2/x1.png"] == ("sick",) and "sick/._y.png" not in ids


def test_split_folders_are_recognised_by_name_and_loose_images_refused(tmp_path):
  for split in ("train", "validation", "test"):
    for name in ("a", "b"):
      _png(tmp_path / "study" / split / name / "x.png")
  _png(tmp_path / "study" / "test" / "b" / "patient7" / "y.png")
  builder = by_path.ByPath(source=str(tmp_path / "study"), data_dir=str(tmp_path / "tfds"))
  assert {r["split"] for r in builder._rows} == {"train", "val", "test"} and len(builder._rows) == 7
  assert builder.class_names() == ("a", "b") and not builder.assigned_splits
  _png(tmp_path / "study" / "train" / "preview.png")
  with pytest.raises(by_path.DatasetError, match="1 image.* outside any class folder .*preview"):
    by_path.ByPath(source=str(tmp_path / "study"), data_dir=str(tmp_path / "tfds"))
  _png(tmp_path / "mixed" / "train" / "a" / "x.png")
  _png(tmp_path / "mixed" / "extra" / "x.png")
  with pytest.raises(by_path.DatasetError, match=r"train folder beside \['extra'\]"):
    by_path.ByPath(source=str(tmp_path / "mixed"), data_dir=str(tmp_path / "tfds"))


def test_multi_label_names_are_stripped_of_spaces(tmp_path):
  for i in range(4):
    _png(tmp_path / f"x{i}.png")
  write_csv(tmp_path / "labels.csv", [("x0.png", "a | b", "train"), ("x1.png", "a", "train"),
                                      ("x2.png", " b", "test"), ("x3.png", "a|b ", "val")])
  builder = by_path.ByPath(source=str(tmp_path / "labels.csv"), data_dir=str(tmp_path / "tfds"))
  assert builder.class_names() == ("a", "b") and builder.MULTI_LABEL


def test_a_smoke_slice_longer_than_a_users_split_takes_the_whole_split():
  from medjax.data import pipeline
  have = {"train": 27, "test": 9}
  assert pipeline._whole_if_shorter("train[:768]", have) == "train"
  assert pipeline._whole_if_shorter("train[:20]", have) == "train[:20]"
  assert pipeline._whole_if_shorter("test", have) == "test"


def test_written_split_leaves_out_files_skipped_as_bad(tmp_path):
  """A run that skipped a bad file writes a split CSV that prepares cleanly as it is."""
  write_study(tmp_path / "study", {"all": 10}, splits=False)
  (tmp_path / "study" / "cyst" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
  config = tiny_config(tmp_path, tmp_path / "tfds", **{"data.name": str(tmp_path / "study"),
                                                       "data.val_fraction": 0.0,
                                                       "data.on_bad_file": "skip"})
  InputPipeline(config, tmp_path / "work", parallel.make_mesh())
  with (tmp_path / "work" / "data_split.csv").open() as f:
    table = list(csv.DictReader(f))
  assert len(table) == 30 and not any("broken" in r["path"] for r in table)
  again = builders.get_builder(str(tmp_path / "work" / "data_split.csv"),
                               tfds_dir=str(tmp_path / "tfds"))  # on_bad_file='fail'.
  assert sum(s.num_examples for s in again.info.splits.values()) == 30


def test_a_run_on_data_that_changed_since_is_refused(tmp_path):
  """Rerunning a finished run (or resuming one) after the dataset was edited would give the
  old results, or mix two datasets, under the new data's name: one line instead."""
  from medjax import main
  write_study(tmp_path / "study", {"train": 3, "test": 2})
  config = tiny_config(tmp_path, tmp_path / "tfds", **{"data.name": str(tmp_path / "study")})
  work = tmp_path / "work"
  InputPipeline(config, work, parallel.make_mesh())
  from medjax.data.pipeline import check_same_source
  check_same_source(config, [work])  # Unchanged: passes.
  shutil.copy(tmp_path / "study" / "train" / "cyst" / "train_cyst_02.png",
              tmp_path / "study" / "train" / "cyst" / "added.png")
  with pytest.raises(cli.UserError, match="started on .* resuming would mix"):
    main.run(config, str(work))
  (work / "results.json").write_text("{}")
  with pytest.raises(cli.UserError, match="finished on .*files added, removed or changed"):
    main.run(config, str(work))
  shutil.rmtree(tmp_path / "study")
  check_same_source(config, [work])  # The data gone: the run's outputs stand as they are.


def test_a_drawn_split_keeps_each_patients_images_together(tmp_path, caplog):
  """<class>/<patient>/<image>: a patient on both sides of a split would let a model score
  by recognising the patient; the first folder below the class is drawn as a whole."""
  rng = np.random.default_rng(0)
  for name in ("healthy", "sick"):
    for patient in range(20):
      for i in range(int(rng.integers(1, 6))):
        _png(tmp_path / "study" / name / f"p{name[0]}{patient:02d}" / f"x{i}.png")
    _png(tmp_path / "study" / name / "loose.png")  # No patient folder: stands alone.
  builder = by_path.ByPath(source=str(tmp_path / "study"), data_dir=str(tmp_path / "tfds"))
  split_of = {}
  for r in builder._rows:
    if r["group"]:
      split_of.setdefault(r["group"], set()).add(r["split"])
  assert len(split_of) == 40 and all(len(s) == 1 for s in split_of.values())
  drawn = [s for s in split_of.values()]
  assert sum(s == {"test"} for s in drawn) == 8 and sum(s == {"val"} for s in drawn) == 4
  assert builder.group_of("sick/ps03/x0.png") == "ps03" and builder.group_of("sick/loose.png") == ""
  assert {t[4] for t in builder.split_table()} >= {"ps03", ""}
  # Given splits that put a patient on both sides are warned about.
  _png(tmp_path / "given" / "train" / "a" / "p1" / "x.png")
  _png(tmp_path / "given" / "test" / "a" / "p1" / "y.png")
  _png(tmp_path / "given" / "test" / "b" / "p2" / "y.png")
  _png(tmp_path / "given" / "train" / "b" / "p3" / "x.png")
  with caplog.at_level("WARNING"):
    by_path.ByPath(source=str(tmp_path / "given"), data_dir=str(tmp_path / "tfds"))
  assert "1 group(s) (patients) have images in more than one split, e.g. p1" in caplog.text


def test_a_csv_group_column_draws_patients_whole_and_holds_out_patients(tmp_path):
  from medjax.data.splits import stratified_holdout
  rows = []
  for patient in range(30):
    for i in range(3):
      path = _png(tmp_path / "img" / f"{patient}_{i}.png")
      rows.append((f"img/{path.name}", "sick" if patient % 3 else "healthy", f"pt{patient}"))
  with (tmp_path / "labels.csv").open("w") as f:
    f.write("path,label,group\n" + "".join(f"{p},{label},{g}\n" for p, label, g in rows))
  builder = by_path.ByPath(source=str(tmp_path / "labels.csv"), data_dir=str(tmp_path / "tfds"))
  by_group = {}
  for r in builder._rows:
    by_group.setdefault(r["group"], set()).add(r["split"])
  assert len(by_group) == 30 and all(len(s) == 1 for s in by_group.values())
  ids = np.array([r["id"] for r in builder._rows], dtype=object)
  labels = np.array([builder.class_names().index(r["labels"][0]) for r in builder._rows])
  groups = {i: builder.group_of(i) for i in ids}
  held = stratified_holdout(ids, labels, 0.2, seed=0, groups=groups)
  assert len(held) == 18 and {groups[i] for i in held}.isdisjoint(  # 2 + 4 patients of 3.
      {groups[i] for i in ids if i not in held})


def test_chest_xray_ids_name_their_patient():
  from medjax.data.builders.chest_xray import ChestXray
  group_of = ChestXray.group_of
  assert group_of(None, "train/NORMAL/IM-0115-0001.jpeg") == "IM-0115"
  assert group_of(None, "train/NORMAL/NORMAL2-IM-1427-0001.jpeg") == "NORMAL2-IM-1427"
  assert group_of(None, "train/PNEUMONIA/person1000_bacteria_2931.jpeg") == "person1000"
  assert group_of(None, "train/PNEUMONIA/person1000_virus_1681.jpeg") == "person1000"
  assert group_of(None, "train/NORMAL/unknown.jpeg") == ""
