"""The figures of a run's evaluation, as PNGs under ``<workdir>/plots/``.

Confusion matrix (counts and row-normalised), ROC and precision-recall curves (AUC and
average precision in the legend), reliability diagram (the ECE's bins). Curves come from
scikit-learn; matplotlib draws with the Agg backend, so no display is needed.
"""
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from medjax import atomic
from medjax.eval import clinical


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path: Path) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  atomic.save_figure(fig, path)
  _pyplot().close(fig)
  return path


def confusion_matrix(labels, pred, class_names, path: Path, title: str) -> Path:
  plt = _pyplot()
  k = len(class_names)
  cm = skm.confusion_matrix(labels, pred, labels=np.arange(k))
  rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
  size = max(4.0, 0.6 * k + 2.5)
  fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), dpi=110)
  for ax, values, kind in ((axes[0], cm, "counts"), (axes[1], rows, "row-normalised")):
    ax.imshow(values if kind == "counts" else rows, cmap="Blues", vmin=0,
              vmax=None if kind == "counts" else 1)
    for i in range(k):
      for j in range(k):
        text = f"{cm[i, j]}" if kind == "counts" else f"{rows[i, j]:.2f}"
        dark = (cm[i, j] / max(cm.max(), 1) if kind == "counts" else rows[i, j]) > 0.5
        ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if k > 3 else 0,
                  ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} ({kind})")
  return _save(fig, path)


def _curves(positives, scores, names, path, title, kind):
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
  for positive, score, name in zip(positives, scores, names):
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
      continue
    if kind == "roc":
      fpr, tpr, _ = skm.roc_curve(positive, score)
      ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(positive, score):.3f})")
    else:
      precision, recall, _ = skm.precision_recall_curve(positive, score)
      ap = skm.average_precision_score(positive, score)
      ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})")
  if kind == "roc":
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
  else:
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:  # A one-class split's PR plot has no curve.
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize="small")
  ax.set_title(title)
  return _save(fig, path)


def one_vs_rest(labels, scores, class_names, multi_label: bool):
  """``(positives, scores, names)`` of the curves: the positive class of a binary task,
  every class against the rest otherwise, every label of a multi-label task."""
  if multi_label:
    return [labels[:, j] for j in range(len(class_names))], list(scores.T), list(class_names)
  if len(class_names) == 2:
    return [labels == 1], [scores[:, 1]], [f"{class_names[1]} vs {class_names[0]}"]
  return [labels == c for c in range(len(class_names))], list(scores.T), list(class_names)


def roc_curves(labels, scores, class_names, path, title, multi_label=False) -> Path:
  return _curves(*one_vs_rest(labels, scores, class_names, multi_label), path, title, "roc")


def pr_curves(labels, scores, class_names, path, title, multi_label=False) -> Path:
  return _curves(*one_vs_rest(labels, scores, class_names, multi_label), path, title, "pr")


def reliability_diagram(probs, labels, path: Path, title: str) -> Path:
  """Accuracy against mean top-label confidence per bin, with bin counts below."""
  plt = _pyplot()
  conf, acc, count = clinical.reliability(probs, labels)
  ece = clinical.expected_calibration_error(probs, labels)
  bins = clinical.ECE_BINS
  centres = (np.arange(bins) + 0.5) / bins
  fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 5.5), dpi=110, sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
  used = count > 0
  ax.bar(centres[used], acc[used], width=1 / bins, edgecolor="black", alpha=0.7,
         label="accuracy in bin")
  ax.plot(conf[used], conf[used], "o", color="tab:red", markersize=3, label="mean confidence")
  ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
  ax.set_ylabel("accuracy")
  ax.set_ylim(0, 1)
  ax.legend(loc="upper left", fontsize="small")
  ax.set_title(f"{title} (ECE {ece:.3f})")
  ax_n.bar(centres, count, width=1 / bins, color="grey")
  ax_n.set_xlabel("confidence of the predicted class")
  ax_n.set_ylabel("examples")
  ax_n.set_xlim(0, 1)
  return _save(fig, path)
