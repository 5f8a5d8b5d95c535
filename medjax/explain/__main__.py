"""Shows where a finished run looked: one heat map per image.

  python -m medjax.explain --workdir=W --out=DIR [--method=gradcam|occlusion|integrated_gradients]
      [--layer=conv3] [--target=CLASS] IMAGE ...

For each image, ``DIR/<name>.<method>.png`` is the heat map over the image at the image's
own size, with the predicted class and its score in the corner, and
``DIR/<name>.<method>.npy`` the raw map at the network's input resolution. The map explains
the predicted class unless ``--target`` names another. Methods: :mod:`medjax.explain.methods`.
Two different images with the same ``<name>`` (``a/x.png b/x.png``) are refused before any
work, since the second's files would overwrite the first's.
"""
from pathlib import Path

from absl import flags

from medjax import cli
from medjax.explain import methods

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags, defined only when it runs: tests import several commands."""
  flags.DEFINE_string("workdir", None, "Workdir of a finished run.", required=True, flag_values=fv)
  flags.DEFINE_string("out", None, "Folder for the overlays and maps.", required=True,
                      flag_values=fv)
  flags.DEFINE_enum("method", "gradcam", list(methods.METHODS), "Saliency method.", flag_values=fv)
  flags.DEFINE_string("layer", None, "Grad-CAM layer (Flax module path); default: the last "
                      "spatial one.", flag_values=fv)
  flags.DEFINE_string("target", None, "Class to explain (default: the predicted one).",
                      flag_values=fv)


def explain_files(run, paths, out: Path, method: str, layer=None, target=None) -> list[Path]:
  """Writes overlay and map per image; returns the overlays (unreadable files: UserError)."""
  import numpy as np
  from medjax import inference
  from medjax.explain import overlay
  if target is not None and target not in run.class_names:
    raise cli.UserError(f"--target={target!r} is not a class of the run: {list(run.class_names)}")
  written = []
  for path in map(Path, paths):
    encoded, why = inference.read_image(path)
    if encoded is None:
      raise cli.UserError(f"{path} {why}")
    image = run.preprocess(encoded)
    scores = np.asarray(run.scores(run.variables, image[None]))[0]
    k = run.class_names.index(target) if target else int(np.argmax(scores))
    try:
      heat = methods.explain(run, image, k, method, layer)
    except KeyError as e:
      raise cli.UserError(f"--layer: {e.args[0]}") from None
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{path.stem}.{method}.npy", heat)
    overlay.overlay(encoded, heat, f"{run.class_names[k]} {scores[k]:.2f}",
                    out / f"{path.stem}.{method}.png")
    written.append(out / f"{path.stem}.{method}.png")
  return written


def check_inputs(paths, out: Path) -> None:
  """Inputs that are folders, an --out that is a file, or two images whose outputs would
  share a name fail before the run loads, so no map is overwritten."""
  cli.writable("out", out, folder=True)
  seen = {}
  for path in map(Path, paths):
    if path.is_dir():
      raise cli.UserError(f"{path} is a folder; medjax.explain takes image files")
    first = seen.setdefault(path.stem, path)
    if first.resolve() != path.resolve():
      raise cli.UserError(f"{first} and {path} would both be written as {out / path.stem}"
                          f".<method>.png; rename one or explain them into separate --out folders")


def main(argv):
  from medjax.data import tf_runtime
  tf_runtime.configure()
  from medjax import inference
  if len(argv) < 2:
    raise cli.UserError("give at least one IMAGE")
  check_inputs(argv[1:], Path(FLAGS.out))
  run = inference.load(FLAGS.workdir)
  for path in explain_files(run, argv[1:], Path(FLAGS.out), FLAGS.method, FLAGS.layer,
                            FLAGS.target):
    print(path)


if __name__ == "__main__":
  cli.run(main, "medjax.explain", define_flags)
