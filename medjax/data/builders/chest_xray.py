"""Kermany et al. (Cell 2018) pediatric chest X-rays, as distributed on Mendeley/Kaggle.

Format relied on (Mendeley Data doi:10.17632/rscbjbr9sj.2, "ZhangLabData / chest_xray"):
``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``; stray ``.DS_Store`` files occur
in the archive and are ignored. The public split is train 1,341 / 3,875, val 8 / 8, test
234 / 390 (NORMAL / PNEUMONIA); the VLAD paper trains on train+val (5,232) and tests on
test (624).

File names carry the patient (``IM-0115-0001.jpeg``, ``NORMAL2-IM-1427-0001.jpeg``,
``person1_bacteria_1.jpeg``): train's 5,216 images come from about 2,850 patients, so a
validation holdout drawn by image would hold images of training patients; ``group_of``
lets it draw whole patients.
"""
import re

from medjax.data.builders.class_folders import ClassFoldersBuilder

_PATIENT = re.compile(r"^(NORMAL2-IM-\d+|IM-\d+|person\d+)[-_]")


class ChestXray(ClassFoldersBuilder):
  VERSION = "1.0.0"
  DESCRIPTION = "Kermany pediatric chest X-rays (NORMAL vs PNEUMONIA)."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download ZhangLabData.zip (or the Kaggle "chest-xray-pneumonia" archive) from
https://data.mendeley.com/datasets/rscbjbr9sj/2, unpack it and place the `chest_xray`
folder so that `<data_dir>/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg` exist
(data_dir = config.data.manual_dir, $MEDJAX_DATA_DIR or ~/medjax_data)."""
  SPLIT_FOLDERS = {"train": "train", "val": "val", "test": "test"}
  CLASS_NAMES = ("NORMAL", "PNEUMONIA")

  def group_of(self, example_id: str) -> str:
    """The patient of an example id (``train/PNEUMONIA/person1_virus_6.jpeg``: ``person1``).

    Kermany's test set numbers its patients apart from train's, so only ids within one
    split are compared (the holdout is drawn from train).
    """
    match = _PATIENT.match(example_id.rsplit("/", 1)[-1])
    return match.group(1) if match else ""
