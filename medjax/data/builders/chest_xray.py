"""Kermany et al. (Cell 2018) pediatric chest X-rays, as distributed on Mendeley/Kaggle.

Format relied on (Mendeley Data doi:10.17632/rscbjbr9sj.2, "ZhangLabData / chest_xray"):
``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``; stray ``.DS_Store`` files occur
in the archive and are ignored. The public split is train 1,341 / 3,875, val 8 / 8, test
234 / 390 (NORMAL / PNEUMONIA); the VLAD paper trains on train+val (5,232) and tests on
test (624).
"""
from medjax.data.builders.class_folders import ClassFoldersBuilder


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
