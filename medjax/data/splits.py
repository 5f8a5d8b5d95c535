"""How splits are drawn: stratified by class, reproducible from a seed, and never cutting a
group (a patient's images), since images of one patient on both sides of a split measure
recognising the patient rather than the finding."""
import collections

import numpy as np


def units_per_key(ids, keys, groups: dict | None = None) -> dict:
  """``{class key: [unit, ...]}``: the units a split must not cut (the images of one group,
  e.g. a patient; without ``groups``, each image alone), each a sorted list of ids, sorted.

  A unit's key is its members' most common one (ties: the smallest), so a patient with a
  normal and an abnormal image is still drawn whole.
  """
  members = collections.defaultdict(list)
  for i, k in sorted(zip(ids, keys)):
    members[groups.get(i, i) if groups else i].append((i, k))
  out = collections.defaultdict(list)
  for unit in members.values():
    counts = collections.Counter(k for _, k in unit)
    out[min(counts, key=lambda k: (-counts[k], k))].append([i for i, _ in unit])
  return {k: sorted(v) for k, v in out.items()}


def stratified_split(ids: list[str], keys: list[str], fractions, seed: int,
                     groups: dict | None = None) -> dict[str, str]:
  """``{id: split}``: per class key, ``round(f * n)`` of its ``n`` units (images, or groups
  such as patients: :func:`units_per_key`) to val and to test, the rest to train."""
  _, f_val, f_test = fractions
  rng = np.random.default_rng(seed)
  out = {}
  per_key = units_per_key(ids, keys, groups)
  for key in sorted(per_key):
    units = per_key[key]
    order = [units[j] for j in rng.permutation(len(units))]
    n_val, n_test = int(round(f_val * len(order))), int(round(f_test * len(order)))
    for rank, unit in enumerate(order):
      for i in unit:
        out[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
  return out


def stratified_holdout(ids: np.ndarray, labels: np.ndarray, fraction: float,
                       seed: int, groups: dict | None = None) -> set[str]:
  """Ids of a ``fraction`` holdout taken per class (rounded), reproducible from ``seed``;
  with ``groups`` (``{id: patient}``), whole groups, so no patient is on both sides.

  Multi-label rows are stratified by their label pattern. Ids are sorted first so the
  result does not depend on the order records were written in.
  """
  keys = (labels.tolist() if labels.ndim == 1
          else ["".join(map(str, r.astype(int))) for r in labels])
  rng = np.random.default_rng(seed)
  held = []
  per_key = units_per_key(ids.tolist(), keys, groups)
  for key in sorted(per_key):
    units = per_key[key]
    n = int(round(fraction * len(units)))
    held.extend(i for j in rng.permutation(len(units))[:n] for i in units[j])
  return set(held)
