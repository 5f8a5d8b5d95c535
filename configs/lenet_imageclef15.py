r"""System 1: four one-vs-all LeNets for ImageCLEF 2015 medical clustering (Lyndon et al.).

Paper: X-rays padded to square with black, resized to 256x256, the 'red' channel kept
(the images are gray); four binary CNNs (Body, Head-Neck, Upper-Limb, Lower-Limb; an
all-negative prediction means true-negative), each conv 20@15x15 -> max-pool 2 -> conv
50@15x15 -> max-pool 2 -> FC 500 tanh -> logistic; batch 20, learning rate 0.005, 100
epochs, 100 % of the training data, no validation. Metrics: exact match, any match and
Hamming similarity (paper: 49.7 / 59.6 / 84.9 %), plus per-label precision and recall.

Interpretations: plain SGD without momentum or weight decay, the tutorial's
initialisation and its two-output logistic layer per binary network (the deeplearning.net
LeNet tutorial the paper builds on; see medjax/models/lenet.py). ``head=one_logit`` swaps
in a single sigmoid logit per network, which trains twice as slowly at the same learning
rate. The four networks are trained together in one jitted step on the sum of their
two-way negative log-likelihoods; they share no parameters, so each receives exactly the
gradient it would get if trained alone, and lr 0.005 means what the paper means. On a
single-label dataset (e.g. ``dataset=chest_xray``) every class gets a one-vs-all network.

  python -m medjax.main --config=configs/lenet_imageclef15.py --workdir=workdirs/lenet15
  python -m medjax.main --config=configs/lenet_imageclef15.py:smoke,dataset=chest_xray \
      --workdir=/tmp/lenet_smoke
  # Affordable CPU run on the chest X-rays (128x128, 5 epochs):
  python -m medjax.main --config=configs/lenet_imageclef15.py:dataset=chest_xray,image_size=128,epochs=5 ...
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, dataset="imageclef2015", image_size=256, epochs=100,
                         seed=0, seeds=1, head="two_way")
  config = common.supervised(seed=arg.seed)
  config.num_seeds = arg.seeds
  config.data = common.data_for(arg.dataset)
  config.pp_eval = f"decode(3)|pad_to_square|resize({arg.image_size})|take_channel(0)"
  config.pp_train = config.pp_eval
  config.model = {"name": "lenet_ova", "head": arg.head}
  config.loss = "sigmoid_xent"
  config.batch_size = 20
  config.eval_batch_size = 100
  config.num_epochs = arg.epochs
  config.optimizer = common.sgd(0.005, momentum=0.0)
  if arg.smoke:
    config.pp_eval = config.pp_train = "decode(3)|pad_to_square|resize(64)|take_channel(0)"
    common.smoke(config, steps=12, batch_size=20)
  return config
