"""The results comparator the suite relies on must itself catch what it is meant to."""
import pytest

from tests.compare import assert_tree_close, tree_mismatches

RESULTS = {"test/accuracy": 0.75, "test/confusion_matrix": [[3, 1], [0, 4]],
           "pr_curve": {"precision": [1.0, 0.5], "recall": [0.0, 1.0]}, "name": "C",
           "config": {"seed": 0, "model": {"variant": "C"}}}


def test_equal_within_tolerance_passes():
  got = {**RESULTS, "test/accuracy": 0.75 + 1e-9,
         "pr_curve": {"precision": (1.0, 0.5 + 1e-9), "recall": [0.0, 1.0]}}
  assert_tree_close(got, RESULTS, rel=1e-6)


@pytest.mark.parametrize("change, where", [
    ({"test/accuracy": 0.76}, "/test/accuracy"),
    ({"test/confusion_matrix": [[3, 1], [1, 4]]}, "/test/confusion_matrix[1][0]"),
    ({"pr_curve": {"precision": [1.0, 0.6], "recall": [0.0, 1.0]}}, "/pr_curve/precision[1]"),
    ({"pr_curve": {"precision": [1.0], "recall": [0.0, 1.0]}}, "/pr_curve/precision"),
    ({"name": "D"}, "/name"),
    ({"config": {"seed": 1, "model": {"variant": "C"}}}, "/config/seed"),
])
def test_each_kind_of_difference_is_reported(change, where):
  problems = tree_mismatches({**RESULTS, **change}, RESULTS, rel=1e-3)
  assert len(problems) == 1 and problems[0].startswith(where), problems
  with pytest.raises(AssertionError, match="results differ"):
    assert_tree_close({**RESULTS, **change}, RESULTS, rel=1e-3)


def test_counts_are_exact_whatever_the_tolerance():
  assert tree_mismatches({"n": 100}, {"n": 101}, rel=0.5) == ["/n: count 100 != 101"]
  assert tree_mismatches({"k": 1}, {}) == ["/k: unexpected"]
  assert tree_mismatches({}, {"k": 1}) == ["/k: missing"]
