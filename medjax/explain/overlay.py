"""The heat map over the image a clinician looks at: at the input file's own size, with the
predicted class and its score in the corner."""
import io
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

matplotlib.use("Agg")
from matplotlib import colormaps  # noqa: E402


def display_image(encoded: bytes) -> Image.Image:
  """The encoded image as 8-bit RGB for display (16-bit and float images min-max scaled)."""
  image = Image.open(io.BytesIO(encoded))
  if image.mode in ("I;16", "I;16B", "I", "F"):
    values = np.asarray(image, np.float64)
    low, high = values.min(), values.max()
    values = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    image = Image.fromarray(values.astype(np.uint8))
  return image.convert("RGB")


def overlay(encoded: bytes, heat: np.ndarray, caption: str, path: Path,
            alpha: float = 0.45) -> None:
  """Writes ``path``: the image with ``heat`` (any size, scaled to [0, 1]) resized onto it
  in the ``jet`` colour map, and ``caption`` in the top-left corner."""
  base = display_image(encoded)
  heat = np.asarray(heat, np.float32)
  span = heat.max() - heat.min()
  heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
  resized = np.asarray(Image.fromarray(heat, "F").resize(base.size, Image.BILINEAR))
  colours = (colormaps["jet"](np.clip(resized, 0, 1))[..., :3] * 255).astype(np.uint8)
  out = Image.blend(base, Image.fromarray(colours), alpha)
  draw = ImageDraw.Draw(out)
  box = draw.textbbox((2, 2), caption)
  draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
  draw.text((2, 2), caption, fill=(255, 255, 255))
  path.parent.mkdir(parents=True, exist_ok=True)
  out.save(path)
