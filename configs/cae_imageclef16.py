r"""System 3: a zero-bias convolutional auto-encoder on frozen AlexNet features, then a
quadratic-hinge linear SVM (Ahn et al.), ImageCLEF 2016 subfigure modality classification.

Paper: AlexNet's last conv stage on 227x227 RGB (6x6x256, our ``pool5``) feeds a CAE with
3x3 kernels, 2x2 max-pooling and 4096 filters (table 1; 512 / 1024 / 2048 tried, table 3),
trained for 100 epochs, batch 512, learning rate 1e-5 annealed /10 when the error
plateaus; at encoding time the biases are zeroed (section 2.3) and the pooled codes feed
the SVM (C = 1, L-BFGS). Our reading: SGD with Caffe's momentum 0.9; "plateau" is the
epoch-mean training loss improving by less than 1e-4 (relative) for 5 epochs; the pooled
zero-bias codes are flattened and L2-normalised. Eq. 3 does not say whether the loss the
learning rate 1e-5 applies to is summed or averaged over the batch; ``loss=mean`` (the
default, Caffe's EuclideanLoss) and ``loss=sum`` (512 times larger steps at batch 512) are
both available, and the one whose loss trains to convergence is the one to keep. To
train to convergence rather than for a fixed budget, raise ``cae.num_epochs`` and set
``cae.converge_rtol`` (e.g. 1e-3: stop when five epochs improve the loss by less than
0.1 %).

The baselines of table 2 run with ``aggregation=``: ``avgpool`` (transfer-learned CNN +
SVM), ``sparse_coding`` and ``ica`` (scikit-learn), and ``ssae``, the 2-layer stacked
sparse auto-encoder (medjax/features/sparse_autoencoder.py), all on the same pooled,
L2-normalised backbone features.
Caffe's AlexNet has no standard weights file: give one with
``--config.backbone.weights=FILE``; otherwise the run falls back to EfficientNet-Lite0's
7x7x1280 head at 224 px, says so in the log and records ``backbone/used``.

  python -m medjax.main --config=configs/cae_imageclef16.py --workdir=workdirs/cae16 \
      --config.backbone.weights=/path/to/bvlc_alexnet.pth
  python -m medjax.main --config=configs/cae_imageclef16.py:dataset=chest_xray,filters=512 \
      --workdir=workdirs/cae_chest --config.cae.num_epochs=10
  python -m medjax.main --config=configs/cae_imageclef16.py:aggregation=sparse_coding ...
  python -m medjax.main --config=configs/cae_imageclef16.py:dataset=chest_xray,aggregation=ssae ...
  python -m medjax.main --config=configs/cae_imageclef16.py:dataset=chest_xray,filters=512,loss=sum \
      --config.cae.num_epochs=1000 --config.cae.converge_rtol=1e-3 ...
  python -m medjax.main --config=configs/cae_imageclef16.py:smoke,dataset=chest_xray \
      --workdir=/tmp/cae_smoke
  # Table 3's filter counts, one workdir each, and ROOT/summary.{md,csv}:
  python -m launch.sweep --config=configs/cae_imageclef16.py --workdir=workdirs/cae16_filters
"""
import ml_collections as mlc

from configs import common

AGGREGATIONS = ("cae", "avgpool", "sparse_coding", "ica", "ssae")  # Table 2's rows.


def cae_fields(filters: int = 4096, loss: str = "mean") -> mlc.ConfigDict:
  """``config.cae``: the auto-encoder and its training (table 1, section 2)."""
  return mlc.ConfigDict({
      "filters": filters,
      "batch_size": 512,
      "num_epochs": 100,
      "steps_per_call": 4,         # As the supervised trainer's: one call, 4 steps.
      # Eq. 3 averaged ("mean", Caffe's EuclideanLoss) or summed ("sum") over the batch:
      # the paper's lr 1e-5 fits one of them; "sum" steps batch_size times larger.
      "loss_reduction": loss,
      # > 0: stop before num_epochs once the best epoch loss of the last
      # converge_patience epochs is less than converge_rtol below the one before them.
      "converge_rtol": 0.0,
      "converge_patience": 5,
      "optimizer": common.sgd(1e-5, momentum=0.9, schedule="plateau"),
  })


def baseline_fields() -> mlc.ConfigDict:
  """``config.baseline`` (sparse coding, ICA) and ``config.ssae``, table 2's baselines."""
  return mlc.ConfigDict({
      # Sparse coding's L1 weight acts on unit-norm pooled features: at 1 every code is 0.
      "baseline": {"components": 256, "alpha": 0.1, "max_iter": 200},
      # The 2-layer stacked sparse auto-encoder (medjax.features.sparse_autoencoder); its
      # last layer gives as many features as the other baselines' components.
      "ssae": {"hidden": (512, 256), "sparsity": 0.05, "sparsity_weight": 3.0,
               "weight_decay": 3e-3, "max_iter": 400},
  })


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, dataset="imageclef2016", backbone="alexnet",
                         aggregation="cae", filters=4096, scale=0, seed=0, seeds=1, loss="mean")
  if arg.aggregation not in AGGREGATIONS:
    raise ValueError(f"config argument aggregation={arg.aggregation}: configs/cae_imageclef16.py "
                     f"runs one of {AGGREGATIONS}; VLAD runs with configs/vlad.py")
  config = common.frozen_features(dataset=arg.dataset, backbone=arg.backbone,
                                  aggregation=arg.aggregation, scale=arg.scale, seed=arg.seed,
                                  seeds=arg.seeds)
  config.cae = cae_fields(arg.filters, arg.loss)
  config.update(baseline_fields())
  if arg.smoke:
    common.smoke_frozen_features(config)
    config.cae.filters = min(config.cae.filters, 64)
    config.cae.num_epochs = 2
    config.cae.batch_size = 64
    config.baseline.components = 32
    config.ssae.hidden = (64, 32)
    config.ssae.max_iter = 50
  return config


def sweep():
  """Table 3: the CAE with 512, 1024, 2048 and 4096 filters (``launch.sweep`` points)."""
  return [f"filters={n}" for n in (512, 1024, 2048, 4096)]
