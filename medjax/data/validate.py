"""Checks raw image files before anything expensive starts.

A month-long run must not die on image 9,000, and a silently broken file must not be
trained on: every file is opened and fully decoded once, and all problems are reported
together with their paths. ``on_bad_file`` decides between failing (default) and skipping
with a count.
"""
import dataclasses
import warnings
from pathlib import Path

from PIL import Image

from medjax import cli

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
# Smaller than this on either side cannot be a radiograph or photograph worth training on.
MIN_SIDE = 16

# Bad files an error names one by one; the rest are counted.
LISTED = 10

class BadDataError(cli.UserError, ValueError):
  """Raised with every problem found in a dataset, one per line."""


class MissingSource(cli.UserError, FileNotFoundError):
  """A dataset's raw folder is not where the config says; the message says where to put it."""


@dataclasses.dataclass(frozen=True)
class Problem:
  path: str
  reason: str

  def __str__(self):
    return f"{self.path}: {self.reason}"


def check_image(path: Path, min_side: int = MIN_SIDE) -> tuple[Problem | None, str | None]:
  """Returns ``(problem, mode)``: the defect found (or None) and the PIL mode (e.g. 'L')."""
  try:
    size = path.stat().st_size
  except OSError as e:
    return Problem(str(path), f"cannot be read ({e.strerror})"), None
  if size == 0:
    return Problem(str(path), "is empty (0 bytes)"), None
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        mode = im.mode
        im.load()  # Full decode: catches truncated files that a header check misses.
        width, height = im.size
  except OSError as e:
    return Problem(str(path), f"is not a readable image or is truncated ({e})"), None
  except (Image.DecompressionBombWarning, Image.DecompressionBombError, ValueError) as e:
    return Problem(str(path), f"cannot be decoded ({e})"), None
  if min(width, height) < min_side:
    return Problem(str(path), f"is implausibly small ({width}x{height} pixels; at least "
                              f"{min_side} expected on each side)"), mode
  return None, mode


@dataclasses.dataclass
class Report:
  """What a scan found: the problems, and how many images of each PIL mode were seen."""
  problems: list[Problem] = dataclasses.field(default_factory=list)
  modes: dict[str, int] = dataclasses.field(default_factory=dict)

  def add(self, problem: Problem | None, mode: str | None):
    if problem is not None:
      self.problems.append(problem)
    if mode is not None:
      self.modes[mode] = self.modes.get(mode, 0) + 1

  def raise_or_skip(self, on_bad_file: str, what: str) -> set[str]:
    """Raises one error counting the problems and naming the first ``LISTED`` (a missing
    archive of 13,000 images is not 13,000 lines), or returns the set of paths to skip."""
    if on_bad_file not in ("fail", "skip"):
      raise ValueError(f"config.data.on_bad_file={on_bad_file!r}; expected 'fail' or 'skip'")
    if len(self.problems) == 1 and on_bad_file == "fail":  # One finding: one line.
      raise BadDataError(f"1 bad file in {what}: {self.problems[0]}; fix or remove it, or set "
                         f"config.data.on_bad_file='skip' to skip and count it")
    if self.problems and on_bad_file == "fail":
      rest = len(self.problems) - LISTED
      lines = "\n".join([f"  {p}" for p in self.problems[:LISTED]] +
                        ([f"  ... and {rest} more"] if rest > 0 else []))
      raise BadDataError(
          f"{len(self.problems)} bad file(s) in {what}; fix or remove them, or set "
          f"config.data.on_bad_file='skip' to skip and count them:\n{lines}")
    return {p.path for p in self.problems}


def mode_histogram(modes: dict[str, int]) -> dict[str, int]:
  """Groups PIL modes into the kinds users care about (grayscale, 16-bit, RGB, ...)."""
  kinds = {"1": "binary", "L": "grayscale", "I;16": "grayscale16", "I;16B": "grayscale16",
           "I": "grayscale32", "P": "palette", "RGB": "rgb", "RGBA": "rgba", "LA": "grayscale_alpha",
           "CMYK": "cmyk", "F": "float"}
  out: dict[str, int] = {}
  for mode, n in modes.items():
    key = kinds.get(mode, mode)
    out[key] = out.get(key, 0) + n
  return dict(sorted(out.items()))
