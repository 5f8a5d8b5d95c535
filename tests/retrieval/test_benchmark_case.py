"""The scale benchmark's case on a small clustered set: its record, never its timings."""
from benchmarks import retrieval_scale, timing


def test_scale_case_record_has_latencies_recall_and_the_plan():
  record = retrieval_scale.scale_case(3000, "real_shaped", d=32, queries=10, approximate_above=2000)
  for field in timing.RECORD_FIELDS:
    assert field in record
  assert record["peer"] == "exact_jax_topk" and record["plan/kind"] == "ivf_flat"
  assert record["exact_p99_ms"] >= record["exact_p50_ms"] > 0
  assert 0.0 <= record["recall_at_10"] <= 1.0 and record["faiss_index_bytes"] > 3000 * 32 * 4
  assert record["plan/tuned_recall_at_10"] >= 0.95


def test_synthetic_sets_are_clustered_not_uniform():
  import numpy as np
  x = retrieval_scale.gaussian(2000, d=64, modes=10)
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  sims = x[:200] @ x.T
  # Each vector's 100th most similar one is far closer than a typical pair: clusters.
  assert np.median(np.sort(sims, axis=1)[:, -100]) > np.median(sims) + 0.3
  assert (retrieval_scale.real_shaped(100, d=16) >= 0).all()
