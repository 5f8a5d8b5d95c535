"""``report.html``: one self-contained page per run, for a reader without the workdir.

It holds the command, the resolved config, examples per split and class, the metrics
with their 95 % intervals, every plot of ``plots/`` and thumbnails of the test examples
the model got wrong with the most confidence. Images are embedded as base64 ``data:``
URIs and the style is inline, so the page opens offline and can be mailed or archived.
"""
import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from medjax.atomic import save_text
from medjax.eval import evaluation, predictions

# The measures a reader looks for first, in this order; the rest follow alphabetically.
FIRST = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "sensitivity",
         "specificity", "ppv", "npv", "f1_macro", "kappa", "kappa_quadratic", "log_loss", "ece",
         "exact_match", "any_match", "hamming_similarity")
_SKIP = ("/ci95_low", "/ci95_high", "/num_examples", "bootstrap/")

STYLE = """body{font-family:sans-serif;margin:2em;max-width:75em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:85%}
figure{display:inline-block;margin:0.5em;vertical-align:top;text-align:center}
figcaption{font-size:80%;max-width:14em;word-break:break-all}img.plot{max-width:36em}"""


def png_data_uri(png: bytes) -> str:
  return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_png(image: np.ndarray) -> bytes:
  """A uint8 ``(H, W)`` or ``(H, W, C)`` image as PNG bytes (matplotlib, no display)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buffer = io.BytesIO()
  plt.imsave(buffer, image, format="png", cmap="gray" if image.ndim == 2 else None)
  return buffer.getvalue()


def _order(name: str):
  head = name.split("/")[0]
  return (FIRST.index(head) if head in FIRST else len(FIRST), name)


def metrics_table(results: dict, split: str) -> str:
  prefix = f"{split}/"
  names = sorted((k[len(prefix):] for k, v in results.items() if k.startswith(prefix)
                  and isinstance(v, (int, float)) and not isinstance(v, bool)
                  and not any(s in k for s in _SKIP)), key=_order)
  rows = []
  for name in names:
    key = prefix + name
    low, high = results.get(f"{key}/ci95_low"), results.get(f"{key}/ci95_high")
    interval = f"{low:.3f} – {high:.3f}" if low is not None else ""
    rows.append(f"<tr><td>{html.escape(name)}</td><td class=n>{results[key]:.4f}</td>"
                f"<td class=n>{interval}</td></tr>")
  n = results.get(f"{split}/num_examples")
  caption = f"<h3>{html.escape(split)}" + (f" ({n} examples)" if n else "") + "</h3>"
  return (caption + "<table><tr><th>measure</th><th>value</th><th>95 % interval "
          "(method above)</th></tr>" + "".join(rows) + "</table>")


def intervals_method(results: dict, split: str) -> str:
  """How ``split``'s intervals were computed, as the run recorded it; why: a proportion's
  (Wilson) and an AUC's (bootstrap) differ, and runs from before the record used the
  bootstrap for all, stratified by class for single-label data only."""
  if f"{split}/intervals/method" in results:
    return results[f"{split}/intervals/method"]
  return (f"Intervals: {results.get(f'{split}/bootstrap/resamples', '?')} bootstrap resamples, "
          f"seed {results.get(f'{split}/bootstrap/seed', '?')}, 2.5 and 97.5 percentiles "
          "(stratified by class for single-label data)")


def _temperature(t) -> str:
  """`` (T = 1.234)``, or one T per label for a multi-label run's per-label scaling."""
  if isinstance(t, (int, float)) and not isinstance(t, bool):
    return f" (T = {t:.3f})"
  if isinstance(t, list) and t:
    return " (T per label = " + ", ".join(f"{v:.3f}" for v in t) + ")"
  return ""


def counts_table(counts: dict[str, dict[str, int]]) -> str:
  classes = list(dict.fromkeys(c for per in counts.values() for c in per))  # Label order.
  head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
  rows = "".join(
      f"<tr><td>{html.escape(split)}</td>" + "".join(
          f"<td class=n>{per.get(c, 0)}</td>" for c in classes)
      + f"<td class=n>{sum(per.values())}</td></tr>" for split, per in counts.items())
  return f"<table><tr><th>split</th>{head}<th>total</th></tr>{rows}</table>"


def write(workdir: Path, results: dict, counts: dict[str, dict[str, int]],
          wrong: list[dict], images: dict[str, np.ndarray]) -> Path:
  """Writes ``<workdir>/report.html``; ``images``: thumbnails of ``wrong``'s ids."""
  workdir = Path(workdir)
  splits = [s for s in ("val", "test") if f"{s}/roc_auc" in results]
  last = splits[-1] if splits else "test"
  parts = [f"<h1>medjax run: {html.escape(workdir.name)}</h1>",
           "<h2>Command</h2><pre>" + html.escape(results.get("command", "(not recorded)"))
           + "</pre>",
           "<h2>Data</h2>" + counts_table(counts),
           "<h2>Metrics</h2><p>Binary tasks: the second class is the positive one. "
           + html.escape(intervals_method(results, last)) + ".</p>"]
  if "calibration/method" in results:
    parts.append("<p>Scores: " + html.escape(str(results["calibration/method"]))
                 + _temperature(results.get("calibration/temperature")) + ".</p>")
  parts.extend(metrics_table(results, s) for s in splits)
  parts.append("<h2>Plots</h2>")
  for png in sorted((workdir / "plots").glob("*.png")):
    parts.append(f"<figure><img class=plot alt='{html.escape(png.stem)}' "
                 f"src='{png_data_uri(png.read_bytes())}'><figcaption>{html.escape(png.name)}"
                 "</figcaption></figure>")
  parts.append("<h2>Most confidently wrong test examples</h2>")
  if not wrong:
    parts.append("<p>None: every test example was classified correctly.</p>")
  for w in wrong:
    image = images.get(w["id"])
    img = (f"<img alt='{html.escape(w['id'])}' src='{png_data_uri(image_png(image))}'>"
           if image is not None else "<p>(image not available)</p>")
    parts.append(f"<figure>{img}<figcaption>{html.escape(w['id'])}<br>true "
                 f"{html.escape(w['label'])}, predicted {html.escape(w['predicted'])} "
                 f"({w['score']:.3f})</figcaption></figure>")
  config = json.dumps(results.get("config", {}), indent=2, sort_keys=True)
  parts.append("<h2>Config</h2><pre>" + html.escape(config) + "</pre>")
  page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>medjax: "
          f"{html.escape(workdir.name)}</title><style>{STYLE}</style></head><body>"
          + "\n".join(parts) + "</body></html>\n")
  path = workdir / "report.html"
  save_text(path, page)
  return path


def write_run_report(workdir: Path, results: dict, data, role: str = "test",
                     data_role: str | None = None) -> Path:
  """The report of a finished run. ``data``: its ``InputPipeline`` (class counts, and the
  thumbnails of the worst errors, read from split ``data_role``, by default ``role``)."""
  path = Path(workdir) / "predictions" / f"{role}.csv"
  wrong = evaluation.confidently_wrong(predictions.read(path)) if path.exists() else []
  images = data.thumbnails(data_role or role, [w["id"] for w in wrong])
  return write(workdir, results, data.class_counts(), wrong, images)
