"""Where metrics go: ``metrics.jsonl`` (one object per logged step), the console, TensorBoard.

Built on clu's ``MetricWriter`` interface so the trainer writes once and every sink
receives it; only process 0 writes.
"""
import json
from pathlib import Path

import jax
import numpy as np
from clu import metric_writers


class JsonlWriter(metric_writers.MetricWriter):
  """Appends ``{"step": s, **scalars}`` lines to ``<workdir>/metrics.jsonl``.

  Scalars written for the same step by different callers (train metrics, progress, eval)
  are merged into one line. On resume, lines from steps after the restored checkpoint are
  dropped first, so the file never holds two histories of the same step.
  """

  def __init__(self, path: Path, resume_step: int):
    self.path = Path(path)
    if self.path.exists():
      kept = [line for line in self.path.read_text().splitlines()
              if line.strip() and json.loads(line)["step"] <= resume_step]
      self.path.write_text("".join(line + "\n" for line in kept))
    self._file = self.path.open("a")
    self._pending: dict = {}

  def write_scalars(self, step, scalars):
    if self._pending and self._pending["step"] != int(step):
      self._write_pending()
    self._pending.setdefault("step", int(step))
    self._pending.update({k: float(np.asarray(v)) for k, v in scalars.items()})

  def _write_pending(self):
    if self._pending:
      self._file.write(json.dumps(self._pending, sort_keys=True) + "\n")
      self._pending = {}

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    self._write_pending()
    self._file.flush()

  def close(self):
    self.flush()
    self._file.close()


# Suffixes of the results a person looks at first (the CLI's printout, sweep summaries).
HEADLINE_SUFFIXES = ("accuracy", "exact_match", "any_match", "hamming_similarity", "mAP", "loss")


def headline(results: dict) -> dict:
  """The headline scalars of a ``results.json`` dict (``test/accuracy``, ``retrieval/mAP``,
  and their ``/mean`` and ``/std`` over seeds)."""
  return {k: v for k, v in results.items() if isinstance(v, (int, float))
          and k.removesuffix("/mean").removesuffix("/std").endswith(HEADLINE_SUFFIXES)}


def create(workdir: Path, resume_step: int) -> metric_writers.MetricWriter:
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      JsonlWriter(Path(workdir) / "metrics.jsonl", resume_step),
      metric_writers.LoggingWriter(),
      metric_writers.SummaryWriter(str(Path(workdir) / "tensorboard")),
  ])
