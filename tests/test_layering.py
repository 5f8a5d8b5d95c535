"""The map's arrows (docs/architecture.md), read from the import statements themselves: a
module that imports across a forbidden arrow fails here, whatever its tests do."""
import ast
import re
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


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def rooms() -> list[list[str]]:
  """The ``medjax/`` paths of each row of architecture.md's first Rooms table, top first."""
  table = ARCHITECTURE.read_text().split("## Rooms", 1)[1].split("\n\n|", 1)[1]
  table = table.split("\n\n", 1)[0]
  found = []
  for line in table.splitlines()[2:]:  # After the header and its rule.
    cell = line.split("|")[1]
    found.append([p.rstrip("/") for p in re.findall(r"`(medjax/[^`]*)`", cell)])
  return found


def room_of(path: str, table) -> int | None:
  """The row whose path holds ``path`` most narrowly (a file's own row before its folder's)."""
  best = None
  for row, paths in enumerate(table):
    for p in paths:
      if (path == p or path.startswith(p + "/")) and (best is None or len(p) > best[1]):
        best = (row, len(p))
  return None if best is None else best[0]


def module_file(name: str) -> str | None:
  """``medjax/...py`` defining ``name`` (a module, or a name inside one), if any."""
  parts = name.split(".")
  for n in range(len(parts), 0, -1):
    for candidate in ("/".join(parts[:n]) + ".py", "/".join(parts[:n]) + "/__init__.py"):
      if (PACKAGE.parent / candidate).is_file():
        return candidate
  return None


def test_every_import_points_down_the_architecture_map():
  """The map says each row imports only rows below it; a module the map does not place, or
  an import up the table (a library room importing a command, eval importing search), fails."""
  table = rooms()
  assert len(table) > 10 and all(table), table
  unplaced, upward = [], []
  for path, names in imports("").items():
    if path.endswith("__init__.py") and not (PACKAGE.parent / path).read_text().strip():
      continue  # An empty package marker.
    source = room_of(path, table)
    if source is None:
      unplaced.append(path)
      continue
    for name in names:
      target_file = module_file(name) if name.startswith("medjax.") else None
      target = None if target_file is None else room_of(target_file, table)
      if target is not None and target < source:
        upward.append(f"{path} imports {name} ({table[target][0]}, above {table[source][0]})")
  assert not unplaced, f"modules in no row of docs/architecture.md: {unplaced}"
  assert not upward, "\n".join(upward)


def test_commands_import_no_other_command():
  """What two commands share lives in a library room below them (inference, cli), so a
  command can change its flags and output without breaking another."""
  commands = {path for path in imports("") if path.count("/") == 1 or
              path.endswith("__main__.py")}
  commands = {p for p in commands if 'if __name__ == "__main__"' in (PACKAGE.parent / p).read_text()}
  assert {"medjax/predict.py", "medjax/retrieve.py", "medjax/main.py"} <= commands
  crossing = [f"{path} imports {name}" for path in commands for name in imports("")[path]
              if name.startswith("medjax.") and module_file(name) in commands - {path}]
  assert not crossing, crossing
