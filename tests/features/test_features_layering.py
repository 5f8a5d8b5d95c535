"""The frozen-feature stage keeps to the map: it imports nothing from the supervised trainer
(shared pieces live in medjax.runloop and medjax.optim), and the pure estimators take
arrays, never the disk-streaming extraction."""
import ast
from pathlib import Path

import pytest

FEATURES = Path(__file__).resolve().parents[2] / "medjax" / "features"
PURE = ("kmeans.py", "lloyd.py", "hamerly.py", "vlad.py", "pca.py", "svm.py", "cae.py", "sparse_autoencoder.py", "norm.py")


def _imports(path: Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return names


@pytest.mark.parametrize("path", sorted(FEATURES.rglob("*.py")), ids=lambda p: p.name)
def test_features_never_import_the_trainer(path):
  assert not any(n == "medjax.train" or n.startswith("medjax.train.") for n in _imports(path))


@pytest.mark.parametrize("name", PURE)
def test_pure_estimators_do_not_import_extraction(name):
  assert not any("extract" in n or "medjax.data" in n for n in _imports(FEATURES / name))
