"""The benchmark runner end to end on one tiny case: records and JSON, never timings."""
import json

from benchmarks import run, timing, vlad


def test_runner_writes_records_with_the_schema(tmp_path):
  out = tmp_path / "bench.json"
  case = timing.Case("vlad/tiny", lambda: vlad.vlad_case(images=3, repeats=1, per_image=8, k=4))
  records = run.run_cases([case], quick=True, out=out)
  assert json.loads(out.read_text()) == records
  (record,) = records
  for field in timing.RECORD_FIELDS:
    assert field in record
  assert record["peer"] == "numpy"
  assert record["ratio"] == record["peer_seconds"] / record["medjax_seconds"]
  assert record["medjax_images_per_s"] > 0 and record["peer_images_per_s"] > 0
  assert record["max_abs_diff"] < 1e-5
  assert len(record["load_avg_before"]) == 3 and record["threads"] >= 1
  assert "vlad/3img_8x512_k4" in timing.markdown_table(records)


def test_every_case_is_listed_and_quick_covers_the_full_suite():
  assert [c.name for c in run.all_cases(quick=True)] == [c.name for c in run.all_cases(False)]
  assert {c.name.split("/")[0] for c in run.all_cases(quick=True)} == {
      "train_step", "extraction", "svm", "kmeans", "vlad", "input_pipeline"}
