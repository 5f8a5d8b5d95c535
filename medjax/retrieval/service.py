"""What ``medjax.serve`` answers, without HTTP: query by example, thumbnails, metrics.

A :class:`Service` holds the run's index and three functions of an uploaded image's
bytes (``embed``, ``predict``, ``explain``), so the web layer can be tested with stand-ins
and the run-backed service (:func:`from_run`) is the same code path. One lock serialises
the model and search calls: jitted JAX calls and faiss searches are each thread-safe, but
one request at a time keeps the memory of a two-core server bounded and the latency of
each request predictable; the web layer runs them off its event loop, so health checks
and thumbnails keep being served meanwhile.
"""
import base64
import dataclasses
import functools
import io
import json
import tempfile
import threading
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from medjax.data import images
from medjax.retrieval import index as index_lib

MAX_K = 100
THUMBNAIL_PX = 160
# What the runs' preprocessing decodes (tf.io.decode_image).
FORMATS = ("PNG", "JPEG", "BMP", "GIF")


class BadImage(ValueError):
  """The upload does not decode as an image."""


def check_image(data: bytes) -> None:
  """Raises :class:`BadImage` unless ``data`` decodes fully as an image PIL reads."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      kind = image.format
  except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
    raise BadImage(f"the upload is not an image this server reads ({', '.join(FORMATS)}): {e}")
  if kind not in FORMATS:
    raise BadImage(f"the upload is a {kind} image; this server reads {', '.join(FORMATS)}")


@dataclasses.dataclass
class Service:
  index: index_lib.Index
  embed: Callable[[bytes], np.ndarray]             # -> (D,)
  predict: Callable[[bytes], np.ndarray]           # -> (K,) class scores
  class_names: tuple[str, ...]
  multi_label: bool = False
  explain: Callable[[bytes, str], bytes] | None = None   # -> PNG overlay
  explain_methods: tuple[str, ...] = ()
  metrics: dict = dataclasses.field(default_factory=dict)
  name: str = ""
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def health(self) -> dict:
    return {"status": "ok", "index_size": len(self.index), "dims": self.index.meta["dims"],
            "search": (self.index.meta["approximate"]["kind"] if self.index.approximate
                       else "exact"), "run": self.name, "classes": list(self.class_names),
            "explain_methods": list(self.explain_methods)}

  def label_name(self, i: int) -> str:
    label = np.asarray(self.index.labels[i])
    if label.ndim == 0:
      return self.class_names[int(label)]
    return ",".join(n for n, on in zip(self.class_names, label) if on) or "none"

  def query(self, data: bytes, k: int = 10, explain: str = "") -> dict:
    """Neighbours, prediction and (when asked) the explanation overlay of one upload."""
    check_image(data)
    data = images.encoded_bytes(data)  # As the run's data was stored (12-bit greyscale).
    if explain and explain not in self.explain_methods:
      raise ValueError(f"explain={explain!r}; this run offers {list(self.explain_methods)}")
    k = int(min(max(k, 1), MAX_K, len(self.index)))
    with self.lock:
      vector = np.asarray(self.embed(data), np.float32).reshape(1, -1)
      scores = np.asarray(self.predict(data), np.float64).reshape(-1)
      rows, dists = self.index.search(vector, k)
      overlay = self.explain(data, explain) if explain else None
    if self.multi_label:
      predicted = [c for c, s in zip(self.class_names, scores) if s >= 0.5]
    else:
      predicted = [self.class_names[int(np.argmax(scores))]]
    out = {"neighbours": [{"id": int(i), "name": str(self.index.ids[i]),
                           "label": self.label_name(i), "distance": float(d),
                           "thumbnail": f"/thumbnails/{int(i)}"}
                          for i, d in zip(rows[0], dists[0]) if i >= 0],
           "prediction": {"label": "|".join(predicted),
                          "scores": {c: float(s) for c, s in zip(self.class_names, scores)}}}
    if overlay is not None:
      out["explanation"] = {"method": explain,
                            "image": "data:image/png;base64," + base64.b64encode(overlay).decode()}
    return out

  @functools.lru_cache(maxsize=2048)
  def thumbnail(self, i: int) -> bytes | None:
    """JPEG thumbnail of indexed image ``i`` (an int from the client, never a path), or
    None when ``i`` is out of range or its file is not on this machine."""
    from medjax.explain.overlay import display_image
    if not 0 <= i < len(self.index) or not str(self.index.paths[i]):
      return None
    path = Path(str(self.index.paths[i]))
    from medjax import inference
    encoded, _ = inference.read_image(path)  # Converted as the run read it (DICOM, TIFF).
    if encoded is None:
      return None
    try:
      image = display_image(encoded)
    except (UnidentifiedImageError, OSError):
      return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()

  __hash__ = object.__hash__


def from_run(workdir) -> Service:
  """The service of a finished run (either pipeline; ``inference.RunError`` otherwise)."""
  import jax
  from medjax import inference
  from medjax.explain import methods, overlay
  from medjax.retrieval import runs
  workdir = Path(workdir)
  run = inference.load(workdir)
  index = runs.open_index(workdir)
  try:
    embed_fn = jax.jit(runs.embedder(run))
  except ValueError as e:
    raise inference.RunError(f"{workdir}: {e}; medjax.serve needs a run that embeds new images")
  scores_fn = jax.jit(run.scores)

  def embed(data):
    return np.asarray(embed_fn(run.variables, run.preprocess(data)[None]))[0]

  def predict(data):
    return np.asarray(scores_fn(run.variables, run.preprocess(data)[None]))[0]

  def explain(data, method):
    image = run.preprocess(data)
    scores = np.asarray(scores_fn(run.variables, image[None]))[0]
    target = int(np.argmax(scores))
    heat = methods.explain(run, image, target, method)
    with tempfile.TemporaryDirectory() as tmp:
      path = Path(tmp) / "overlay.png"
      overlay.overlay(data, heat, f"{run.class_names[target]} {scores[target]:.2f}", path)
      return path.read_bytes()

  results = json.loads((workdir / "results.json").read_text())
  metrics = {k[len("retrieval/"):]: v for k, v in results.items() if k.startswith("retrieval/")}
  return Service(index=index, embed=embed, predict=predict, class_names=run.class_names,
                 multi_label=run.multi_label, explain=explain,
                 explain_methods=("occlusion", "gradcam"), metrics=metrics, name=str(workdir))
