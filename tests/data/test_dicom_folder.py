"""DICOM folders: rescale, VOI window, MONOCHROME1 inversion, 16-bit PNG out, bad files."""
import io

import numpy as np
import pydicom
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medjax.data import validate
from medjax.data.builders import dicom_folder

from standins import prepare


def write_dicom(path, pixels, photometric="MONOCHROME2", **attributes):
  """A minimal single-frame Secondary Capture file holding ``pixels``."""
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = pydicom.Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.Rows, ds.Columns = pixels.shape[:2]
  ds.PhotometricInterpretation = photometric
  ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
  if photometric == "RGB":
    ds.PlanarConfiguration = 0
  ds.BitsAllocated = ds.BitsStored = 8 * pixels.dtype.itemsize
  ds.HighBit = ds.BitsStored - 1
  ds.PixelRepresentation = 0
  for key, value in attributes.items():
    setattr(ds, key, value)
  ds.PixelData = pixels.tobytes()
  path.parent.mkdir(parents=True, exist_ok=True)
  ds.save_as(path, enforce_file_format=True)
  return path


def ramp(rows=20, cols=24):
  return (np.arange(rows * cols, dtype=np.uint16) % 400).reshape(rows, cols)


def decoded(path):
  image = Image.open(io.BytesIO(dicom_folder.dicom_to_png(path)))
  return image.mode, np.asarray(image)


def test_rescale_then_window(tmp_path):
  pixels = np.zeros((20, 20), np.uint16)
  pixels[0, :4] = [0, 100, 200, 300]
  path = write_dicom(tmp_path / "a.dcm", pixels, RescaleSlope=2, RescaleIntercept=-100,
                     WindowCenter=[200, 40], WindowWidth=[401, 80])
  mode, image = decoded(path)
  # Stored 0, 100, 200, 300 -> -100, 100, 300, 500 -> linear window c=200, w=401 (PS3.3).
  assert mode == "I;16"
  assert image[0, :4].tolist() == [0, 16466, 49233, 65535]


def test_min_max_without_window_and_monochrome1_inverted(tmp_path):
  pixels = ramp()
  _, plain = decoded(write_dicom(tmp_path / "m2.dcm", pixels))
  _, inverted = decoded(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1"))
  assert plain.min() == 0 and plain.max() == 65535
  np.testing.assert_array_equal(inverted, 65535 - plain)


def _lut(values, bits=16):
  """A LUT item (Modality or VOI LUT Sequence) mapping stored 0.. to ``values``."""
  item = pydicom.Dataset()
  item.LUTDescriptor = [len(values), 0, bits]
  item.LUTData = np.asarray(values, np.uint16).tobytes()
  return item


def test_twelve_bit_x_ray_without_window_spans_the_full_range(tmp_path):
  pixels = (np.arange(20 * 24) * 4095 // (20 * 24 - 1)).astype(np.uint16).reshape(20, 24)
  _, image = decoded(write_dicom(tmp_path / "x.dcm", pixels, BitsStored=12, HighBit=11))
  assert image.min() == 0 and image.max() == 65535 and abs(image.mean() - 32767) < 200


def test_voi_lut_sequence_and_modality_lut_sequence_are_applied(tmp_path):
  pixels = np.zeros((20, 20), np.uint16)
  pixels[0, :3] = [0, 1024, 4095]
  root = np.rint(65535 * np.sqrt(np.arange(4096) / 4095))  # A non-linear VOI LUT.
  _, image = decoded(write_dicom(tmp_path / "v.dcm", pixels, VOILUTSequence=[_lut(root)]))
  assert image[0, :3].tolist() == [0, root[1024], 65535] and root[1024] == 32772  # not 16388
  flipped = _lut(4095 - np.arange(4096), bits=12)  # Modality LUT: stored 0 -> 4095.
  _, image = decoded(write_dicom(tmp_path / "m.dcm", pixels, ModalityLUTSequence=[flipped]))
  assert image[0, 0] == 65535 and image[0, 2] == 0


def test_sigmoid_window_and_monochrome1_window(tmp_path):
  pixels = np.zeros((20, 20), np.uint16)
  pixels[0, :3] = [1548, 2048, 2548]  # center - width/2, center, center + width/2
  window = dict(WindowCenter=2048, WindowWidth=1000, BitsStored=12, HighBit=11)
  _, image = decoded(write_dicom(tmp_path / "s.dcm", pixels, VOILUTFunction="SIGMOID", **window))
  expected = 65535 / (1 + np.exp(-4 * (np.array([-500, 0, 500])) / 1000))  # PS3.3 C.11.2.1.3.1
  np.testing.assert_allclose(image[0, :3], expected, atol=20)
  _, inverted = decoded(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", **window))
  _, plain = decoded(write_dicom(tmp_path / "m2.dcm", pixels, **window))
  np.testing.assert_array_equal(inverted, 65535 - plain)
  assert plain[0, 0] < 100 and plain[0, 2] > 65435 and plain[1, 1] == 0


def test_ybr_colour_of_jpeg_dicom_is_stored_as_rgb(tmp_path):
  from pydicom.pixels import convert_color_space
  pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
  ybr = convert_color_space(pixels, "RGB", "YBR_FULL")
  mode, image = decoded(write_dicom(tmp_path / "y.dcm", ybr, "YBR_FULL", SamplesPerPixel=3,
                                    PlanarConfiguration=0))
  assert mode == "RGB"
  np.testing.assert_allclose(image.astype(int), pixels.astype(int), atol=2)  # YCbCr rounding.


def test_rgb_is_stored_as_8_bit_rgb(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
  mode, image = decoded(write_dicom(tmp_path / "c.dcm", pixels, "RGB"))
  assert mode == "RGB"
  np.testing.assert_array_equal(image, pixels)


def _folder(root):
  for split, n in (("train", 2), ("test", 1)):
    for label in ("normal", "abnormal"):
      for i in range(n):
        write_dicom(root / split / label / f"{label}{i}.dcm", ramp() + i)
  (root / "train" / "normal" / ".DS_Store").write_bytes(b"\0")


def test_folder_is_prepared_as_16_bit_png(tmp_path):
  _folder(tmp_path / "data" / "dicom_folder")
  builder = prepare("dicom_folder", tmp_path / "data", tmp_path / "tfds")
  assert builder.class_names() == ("abnormal", "normal")
  assert builder.info.splits["train"].num_examples == 4
  assert builder.info.metadata["image_kinds"] == {"grayscale16": 6}
  ex = next(iter(builder.as_dataset(split="test",
                                    decoders={"image": tfds.decode.SkipDecoding()})))
  stored = Image.open(io.BytesIO(ex["image"].numpy()))
  assert (stored.format, stored.mode) == ("PNG", "I;16")


def test_unreadable_and_tiny_files_are_named_or_skipped(tmp_path):
  root = tmp_path / "data" / "dicom_folder"
  _folder(root)
  (root / "train" / "normal" / "report.dcm").write_text("not a DICOM file")
  write_dicom(root / "train" / "abnormal" / "tiny.dcm", np.zeros((8, 8), np.uint16))
  write_dicom(root / "test" / "normal" / "ybr.dcm", ramp(), "PALETTE COLOR")
  with pytest.raises(validate.BadDataError) as error:
    prepare("dicom_folder", tmp_path / "data", tmp_path / "tfds")
  message = str(error.value)
  assert message.startswith("3 bad file(s)")
  for fragment in ("report.dcm: is not a readable DICOM image",
                   "tiny.dcm: is implausibly small (8x8",
                   "ybr.dcm: is not a readable DICOM image (photometric interpretation "
                   "'PALETTE COLOR'"):
    assert fragment in message
  builder = prepare("dicom_folder", tmp_path / "data", tmp_path / "tfds", on_bad_file="skip")
  assert builder.info.metadata["skipped"] == [
      "test/normal/ybr.dcm", "train/abnormal/tiny.dcm", "train/normal/report.dcm"]


def test_empty_and_cut_short_dicom_files_say_so(tmp_path):
  (tmp_path / "empty.dcm").write_bytes(b"")
  whole = write_dicom(tmp_path / "whole.dcm", ramp()).read_bytes()
  (tmp_path / "cut.dcm").write_bytes(whole[:300])  # Header only: no pixel data.
  assert str(dicom_folder.check_dicom(tmp_path / "empty.dcm")[0]).endswith(
      "empty.dcm: is empty (0 bytes)")
  assert "has no pixel data" in str(dicom_folder.check_dicom(tmp_path / "cut.dcm")[0])
  assert dicom_folder.check_dicom(tmp_path / "whole.dcm") == (None, "I;16")


def test_pacs_files_without_a_suffix_are_dicom_by_content(tmp_path):
  from medjax.data.builders import by_path
  for name in ("normal", "tumour"):
    for i in range(4):
      write_dicom(tmp_path / "study" / name / f"IM{i:06d}", ramp())
    write_dicom(tmp_path / "study" / name / "1.2.840.113619.2.55.3.7", ramp())  # UID name.
  (tmp_path / "study" / "normal" / "NOTES").write_text("not an image")
  write_dicom(tmp_path / "study" / "normal" / "DICOMDIR", ramp())  # The export's index.
  builder = by_path.ByPath(source=str(tmp_path / "study"), data_dir=str(tmp_path / "tfds"))
  ids = sorted(r["id"] for r in builder._rows)
  assert len(ids) == 10 and "normal/IM000000" in ids and "normal/1.2.840.113619.2.55.3.7" in ids
  assert not {"normal/NOTES", "normal/DICOMDIR"} & set(ids)
  assert builder._check_file(tmp_path / "study" / "normal" / "IM000000") == (None, "I;16")
