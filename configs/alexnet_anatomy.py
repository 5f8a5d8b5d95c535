r"""System 2: the modified AlexNet for anatomy classification, and the paper's comparison.

Paper (Madamombe): conv1 96@11x11 stride 4 + LRN, pool 3 stride 2, conv2 256@5x5 stride 2,
conv3 384@3x3 stride 2, conv4 256@3x3 stride 2, fc5 4096 ReLU (no dropout), fc6 4096; SGD
lr 0.01, momentum 0.9, weight decay 5e-4, 30-60 epochs; compared with LeNet, AlexNet and
GoogLeNet. ``model=`` picks the network so the comparison is one sweep:

  modified        medjax/models/alexnet_anatomy.py (227x227 RGB; see its docstring)
  alexnet         Krizhevsky et al. as in Caffe's bvlc_alexnet (227x227, LRN, dropout)
  googlenet       Inception v1 as in the 2014 paper / Caffe's bvlc_googlenet (224x224; LRN,
                  true 5x5 branch, no batch norm; auxiliary heads not built)
  googlenet_bn    torchvision's variant (batch norm, 3x3 in the "5x5" branch): kept for
                  ImageNet-weight import, not the paper's network
  lenet           Caffe's LeNet (28x28 gray, conv 20@5 -> pool -> conv 50@5 -> pool ->
                  FC 500 ReLU -> classifier; no non-linearity after the conv-pools)

``conv2_pool=True`` adds a max-pool after the modified AlexNet's conv2, the other reading
of the paper's text ("the pooled feature maps are again convolved in layer conv3"; Table I
lists no such pool; see medjax/models/alexnet_anatomy.py).

All are trained from scratch with the paper's optimiser. The paper states no dataset,
input pipeline or batch size: we use the IRMA anatomy classes by default, the sizes above
(as in NVIDIA DIGITS, where these four networks were the standard set), training-mean
image subtraction, and batch 64.

  python -m medjax.main --config=configs/alexnet_anatomy.py:model=modified --workdir=workdirs/anat_mod
  python -m medjax.main --config=configs/alexnet_anatomy.py:smoke,dataset=chest_xray,model=googlenet \
      --workdir=/tmp/anat_smoke
  # The whole comparison (one workdir per model, then summary.md / summary.csv):
  python -m launch.sweep --config=configs/alexnet_anatomy.py:dataset=chest_xray --workdir=workdirs/anatomy
"""
from configs import common

# model -> (registry name, model kwargs, input size, channels)
MODELS = {
    "modified": ("alexnet_anatomy", {}, 227, 3),
    "alexnet": ("alexnet", {}, 227, 3),
    "googlenet": ("googlenet", {"variant": "2014"}, 224, 3),
    "googlenet_bn": ("googlenet", {"variant": "torchvision"}, 224, 3),
    "lenet": ("lenet", {"kernel_size": 5, "variant": "caffe"}, 28, 1),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, dataset="irma", model="modified", epochs=30, seed=0,
                         seeds=1, batch_size=64, conv2_pool=False)
  if arg.model not in MODELS:
    raise ValueError(f"model={arg.model!r}; expected one of {sorted(MODELS)}")
  name, kwargs, size, channels = MODELS[arg.model]
  config = common.supervised(seed=arg.seed)
  config.num_seeds = arg.seeds
  # 227x227 RGB floats would take 3.2 GB per 5k images in memory: cache encoded records.
  config.data = common.data_for(arg.dataset, cache="encoded")
  rgb = "|gray_to_rgb" if channels == 3 else ""
  config.pp_eval = f"decode(1)|resize({size}){rgb}|subtract_mean"
  config.pp_train = config.pp_eval
  if arg.conv2_pool:
    if arg.model != "modified":
      raise ValueError(f"conv2_pool applies to model=modified, not model={arg.model!r}")
    kwargs = {**kwargs, "pool_after_conv2": True}
  config.model = {"name": name, **kwargs}
  config.loss = "softmax_xent"
  config.batch_size = arg.batch_size
  config.eval_batch_size = 128
  config.num_epochs = arg.epochs
  config.optimizer = common.sgd(0.01, momentum=0.9, weight_decay=5e-4)
  if arg.smoke:
    common.smoke(config, steps=8, batch_size=16)
  return config


def sweep():
  """The paper's comparison: the modified AlexNet against LeNet, AlexNet and GoogLeNet."""
  return [f"model={m}" for m in ("modified", "lenet", "alexnet", "googlenet")]
