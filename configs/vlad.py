r"""System 5: frozen VGG19 features at several input scales, average pooling or VLAD, then a
linear SVM (Farhat & Sicre), on Mini-MIT, Kermany chest X-rays and Kvasir.

Paper: VGG19 up to block5_pool, inputs of 224, 224 + 320 = 544 and 224 + 640 = 864 pixels;
the baseline averages the conv map over space, L2-normalises and trains a linear SVM
(fig. 5: chest X-rays 0.80 / 0.81 / 0.78); VLAD takes every block5_pool position as a
local descriptor, k = 64 or 256 k-means words, L2, "PCA reduction", linear SVM (fig. 6:
0.77 / 0.78 at k = 64 / 256). Our reading of what it leaves open: the SVM is the
quadratic-hinge one-vs-rest linear SVM with C = 1 (medjax.features.svm); k-means is
k-means++ plus Lloyd on at most 100,000 train descriptors; VLAD vectors are reduced to
512 by PCA fit on train, then L2. Descriptors are used as they are when at most 512-d
(VGG19's block5_pool, as in the paper); wider ones (EfficientNet-Lite0's 1280-d head,
which would make k = 256 VLAD 327,680-d) are first PCA-reduced to 256 on train
(``vlad.descriptor_dims`` / ``vlad.descriptor_pca_above``; descriptor_dims=0: never).

The local chest X-ray copy (../shared/data/chest_xray) was resized to 224x224 by its
re-publisher, so at scales 544 and 864 the images are only upsampled: those scales change
the backbone's receptive field relative to the image, not the detail it sees, unlike the
paper's runs on the full-resolution originals. ``scales=224+544+864`` concatenates the
three scales' pooled features (avgpool). VGG19 weights are not shipped: without
``<data_dir>/pretrained/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (or
``--config.backbone.weights=FILE``) the run falls back to EfficientNet-Lite0's 7x7x1280
head, says so in the log and records ``backbone/used`` in results.json.

  python -m medjax.main --config=configs/vlad.py:dataset=chest_xray,aggregation=avgpool \
      --workdir=workdirs/vlad_chest_avgpool
  python -m medjax.main --config=configs/vlad.py:aggregation=avgpool,scale=544 ...
  python -m medjax.main --config=configs/vlad.py:dataset=chest_xray,aggregation=vlad,k=256 ...
  python -m medjax.main --config=configs/vlad.py:dataset=kvasir,aggregation=vlad,k=64 ...
  python -m medjax.main --config=configs/vlad.py:smoke,dataset=chest_xray,aggregation=avgpool \
      --workdir=/tmp/vlad_smoke
  # Several scales at once (pooled features concatenated):
  python -m medjax.main --config=configs/vlad.py:dataset=chest_xray,scales=224+544+864 ...
  # VLAD at k = 64 and 256 at each scale, one workdir each, and ROOT/summary.{md,csv}:
  python -m launch.sweep --config=configs/vlad.py:dataset=chest_xray --workdir=workdirs/vlad_chest
"""
import ml_collections as mlc

from configs import common

AGGREGATIONS = ("avgpool", "vlad")  # The others are system 3's: configs/cae_imageclef16.py.


def vlad_fields(k: int = 64) -> mlc.ConfigDict:
  """``config.vlad``: the vocabulary, descriptor reduction and VLAD normalisations."""
  return mlc.ConfigDict({
      "k": k,
      "max_descriptors": 100_000,  # k-means sample of train descriptors.
      "descriptor_l2": False,
      # PCA of descriptors before k-means, only for descriptors wider than
      # descriptor_pca_above: VGG19's 512-d ones stay raw (paper 5 reduces only the
      # VLAD vectors); EfficientNet-Lite0's 1280-d ones go to 256, else k = 256 VLAD
      # would be 327,680-d. descriptor_dims 0 never reduces.
      "descriptor_dims": 256,
      "descriptor_pca_above": 512,
      "power_alpha": 0.0,          # > 0: signed power normalisation; 0 off.
      "intra_norm": False,
      "kmeans_max_iter": 100,
      "kmeans_tol": 1e-4,
      "pca_dims": 512,             # PCA of the VLAD vectors; 0 keeps them.
  })


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, dataset="chest_xray", backbone="vgg19",
                         aggregation="avgpool", k=64, scale=224, scales="", seed=0, seeds=1)
  if arg.aggregation not in AGGREGATIONS:
    raise ValueError(f"config argument aggregation={arg.aggregation}: configs/vlad.py runs "
                     f"{' or '.join(AGGREGATIONS)}; system 3's aggregations run with "
                     f"configs/cae_imageclef16.py")
  config = common.frozen_features(dataset=arg.dataset, backbone=arg.backbone,
                                  aggregation=arg.aggregation, scale=arg.scale, seed=arg.seed,
                                  seeds=arg.seeds)
  config.vlad = vlad_fields(arg.k)
  if arg.scales:
    if arg.aggregation != "avgpool":
      raise ValueError(f"scales={arg.scales} concatenates pooled features: aggregation=avgpool")
    config.features.scales = tuple(int(s) for s in arg.scales.split("+"))
  if arg.smoke:
    common.smoke_frozen_features(config)
    config.vlad.max_descriptors = 5000
    config.vlad.kmeans_max_iter = 20
    config.vlad.pca_dims = 64
  return config


def sweep():
  """Fig. 6 over the scales of fig. 5: VLAD with k = 64 and 256 words at 224, 544 and 864
  pixels (``launch.sweep`` points)."""
  return [f"aggregation=vlad,k={k},scale={s}" for k in (64, 256) for s in (224, 544, 864)]
