"""The map's arrows (docs/architecture.md), read from the import statements themselves: a
module that imports across a forbidden arrow fails here, whatever its tests do."""
import ast
import sys
from pathlib import Path


import medjax

PACKAGE = Path(medjax.__file__).parent
# What a model may import: the standard library, the numeric stack and medjax's kernels.
MODEL_IMPORTS = ("jax", "flax", "numpy", "medjax.models", "medjax.kernels")


def imports(folder: str) -> dict[str, list[str]]:
  """Every module imported by each file under ``medjax/<folder>``, relative ones resolved."""
  found = {}
  for path in sorted((PACKAGE / folder).rglob("*.py")):
    names = []
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names += [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] +
                          ([base] if base else []))
        names += [f"{base}.{alias.name}" for alias in node.names]
    found[str(path.relative_to(PACKAGE.parent))] = names
  return found


def within(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_models_import_only_jax_flax_numpy_and_the_kernels():
  assert imports("models"), "no model modules found"
  bad = {path: [n for n in names if not (within(n, MODEL_IMPORTS) or
                                         n.split(".")[0] in sys.stdlib_module_names)]
         for path, names in imports("models").items()}
  assert not {path: names for path, names in bad.items() if names}


def test_models_import_nothing_from_weights_data_train_or_features():
  forbidden = ("medjax.weights", "medjax.data", "medjax.train", "medjax.features")
  bad = {path: [n for n in names if within(n, forbidden)]
         for path, names in imports("models").items()}
  assert not {path: names for path, names in bad.items() if names}


def test_kernels_import_only_jax_flax_and_the_standard_library():
  bad = {path: [n for n in names if not (within(n, ("jax", "flax", "medjax.kernels")) or
                                         n.split(".")[0] in sys.stdlib_module_names)]
         for path, names in imports("kernels").items()}
  assert not {path: names for path, names in bad.items() if names}


def test_no_module_under_medjax_is_over_400_lines():
  """Long modules are where a second mechanism hides; split by responsibility instead."""
  long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
          if (n := len(p.read_text().splitlines())) > 400}
  assert not long
