"""IRMA / ImageCLEFmed 2009: the real label CSVs with stand-in images, and bad inputs."""
import shutil

import pytest

from medjax.data import validate
from medjax.data.builders import irma
from medjax.data.describe import class_counts

from standins import examples, png_bytes, prepare, write_image, write_truncated

HEADER = ("image_id;irma_code;05_class;05_irma_code_submask;06_class;06_irma_code;"
          "07_irma_code;08_irma_code")


def _stand_in_images(root, table, folder):
  """One tiny PNG per id of ``table``, under ``root/folder`` (the same bytes: fast)."""
  png = png_bytes(20)
  (root / folder).mkdir(parents=True)
  for line in (root / table).read_text().splitlines()[1:]:
    (root / folder / f"{line.split(';')[0]}.png").write_bytes(png)


@pytest.mark.slow
def test_real_label_files_give_the_papers_five_class_counts(shared_data, tmp_path):
  source = shared_data / "irma"
  if not (source / "train_codes_02.csv").is_file():
    pytest.skip(f"IRMA label files not found in {source}")
  root = tmp_path / "data" / "irma"
  root.mkdir(parents=True)
  for table, (_, folder) in zip(("train_codes_02.csv", "test_codes_03.csv"),
                                irma.Irma.SPLITS.values()):
    shutil.copy(source / table, root / table)
    _stand_in_images(root, table, folder)

  builder = prepare("irma", tmp_path / "data", tmp_path / "tfds")

  assert class_counts(builder, "train") == {"cranium": 1246, "spine": 1475,
                                            "upper_extremity": 2041, "chest": 4829,
                                            "lower_extremity": 2153}
  assert builder.info.splits["test"].num_examples == 1552
  # 12,677 training rows: 11,744 in the five regions, 933 of other regions left out.
  assert builder.info.metadata["excluded"] == {"train": 933, "test": 181}
  assert builder.info.metadata["skipped"] == []


def _write_table(root, rows, name="train_codes_02.csv"):
  (root / name).write_text("\r\n".join([HEADER, *rows]) + "\r\n")


def _synthetic(root):
  """A training table exercising letters in codes, excluded regions and every bad row."""
  train = root / "ImageCLEFmed2009_train.02"
  rows = {
      "101": r"1121-12f-4a0-700;\N;\N;\N;\N;\N;\N",  # letters; region 4 (upper extremity)
      "102": "1121-120-200-700;;;;;;",                # cranium
      "103": "1121-120-800-700;;;;;;",                # pelvis: only in anatomy9
      "104": "1121-120-9x1-700;;;;;;",                # lower extremity
  }
  for image_id in rows:
    write_image(train / f"{image_id}.png")
  _write_table(root, [f"{i};{rest}" for i, rest in rows.items()])
  write_image(root / "ImageCLEFmed2009_test.03" / "201.png")
  _write_table(root, ["201;1121-120-500-700;;;;;;"], "test_codes_03.csv")


def _add_bad_rows(root):
  train = root / "ImageCLEFmed2009_train.02"
  write_truncated(train / "105.png")
  write_image(train / "106.png")
  write_image(train / "107.png")
  rows = (root / "train_codes_02.csv").read_text().splitlines()
  rows += ["105;1121-120-500-700;;;;;;",    # truncated image
           "106;12-34;;;;;;",                # unparseable code
           r"107;\N;;;;;;",                  # no code at all
           "108;1121-120-500-700;;;;;;",     # image missing
           "101;1121-120-500-700;;;;;;"]     # duplicate id
  (root / "train_codes_02.csv").write_text("\n".join(rows) + "\n")


def test_codes_with_letters_are_parsed_and_axes_kept(tmp_path):
  root = tmp_path / "data" / "irma"
  _synthetic(root)
  builder = prepare("irma", tmp_path / "data", tmp_path / "tfds")
  names = builder.class_names()
  labels = {k: names[v] for k, v in examples(builder, "train").items()}
  assert labels == {"101": "upper_extremity", "102": "cranium", "104": "lower_extremity"}
  assert builder.info.metadata["excluded"] == {"train": 1, "test": 0}
  ex = next(iter(builder.as_dataset(split="train").filter(lambda e: e["id"] == "101")))
  assert ex["irma_code"].numpy().decode() == "1121-12f-4a0-700"
  assert [ex[k].numpy().decode() for k in ("irma_technical", "irma_directional",
                                           "irma_anatomical", "irma_biological")] == \
      ["1121", "12f", "4a0", "700"]
  assert irma.parse_code("1121-12F-4A0-700") == ("1121", "12f", "4a0", "700")
  assert irma.parse_code("1121-120-200") is None


def test_all_nine_regions_config(tmp_path):
  root = tmp_path / "data" / "irma"
  _synthetic(root)
  builder = prepare("irma/anatomy9", tmp_path / "data", tmp_path / "tfds")
  names = builder.class_names()
  assert len(names) == 9
  labels = {k: names[v] for k, v in examples(builder, "train").items()}
  assert labels["103"] == "pelvis"
  with pytest.raises(KeyError, match="anatomy5"):
    prepare("irma/anatomy7", tmp_path / "data", tmp_path / "tfds")


def test_bad_rows_and_files_are_named_in_one_error(tmp_path):
  root = tmp_path / "data" / "irma"
  _synthetic(root)
  _add_bad_rows(root)
  with pytest.raises(validate.BadDataError) as error:
    prepare("irma", tmp_path / "data", tmp_path / "tfds")
  message = str(error.value)
  assert message.startswith("5 bad file(s)")
  for fragment in ("105.png: is not a readable image", "train_codes_02.csv:7: irma_code '12-34'",
                   "train_codes_02.csv:8: irma_code", "108.png: is missing (listed at "
                   "train_codes_02.csv:9)", "id '101' is listed 2 times"):
    assert fragment in message


def test_bad_rows_and_files_are_skipped_and_counted(tmp_path):
  root = tmp_path / "data" / "irma"
  _synthetic(root)
  _add_bad_rows(root)
  builder = prepare("irma", tmp_path / "data", tmp_path / "tfds", on_bad_file="skip")
  assert len(builder.info.metadata["skipped"]) == 5
  # 101 (duplicated) and the bad rows are out; 102 and 104 remain.
  assert sorted(examples(builder, "train")) == ["102", "104"]


# (train, test) images per region in the real label files (the README's training counts).
REGION_COUNTS = {"cranium": (1246, 150), "spine": (1475, 224), "upper_extremity": (2041, 522),
                 "chest": (4829, 150)}


@pytest.mark.parametrize("config, names", [
    ("anatomy3", ("cranium", "spine", "upper_extremity")),
    ("anatomy4", ("cranium", "spine", "upper_extremity", "chest")),
])
def test_real_label_files_give_networks_e_to_g_three_and_four_classes(shared_data, tmp_path,
                                                                      config, names):
  """The 3- and 4-class setups (our reading of "FC-classes(3,4)"), listed from the real
  label files in place (no images are needed to list them)."""
  source = shared_data / "irma"
  if not (source / "train_codes_02.csv").is_file():
    pytest.skip(f"IRMA label files not found in {source}")
  builder = irma.Irma(config=config, data_dir=str(tmp_path / "tfds"))
  entries, problems = builder._list(source).result()
  assert problems == []
  assert builder.class_names() == names
  for split, column, rows in (("train", 0, 12_677), ("test", 1, 1_733)):
    counts = {name: sum(e.label == i for e in entries[split]) for i, name in enumerate(names)}
    assert counts == {name: REGION_COUNTS[name][column] for name in names}, split
    # Every row of the other regions is left out and counted.
    assert sum(counts.values()) + builder.info.metadata["excluded"][split] == rows
