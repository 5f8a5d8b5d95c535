"""System 4: the small VGG-style networks A-G of ElMarakbey et al. on IRMA X-rays.

The paper's Tables 1 and 3 came out of the PDF extraction garbled; this is how we read
them (every conv has 20 filters, stride 1, 'same' padding as in VGG, followed by ReLU;
every pool is 2x2 stride 2; 'C' = conv, 'P' = pool):

  A  C P C P C P                 (3x3)   FC-4500
  B  CC P CC P CC P              (3x3)   FC-4500
  C  CC P CC P CCC P             (3x3)   FC-4500
  D  CC P CC P CC P CC P         (3x3)   FC-1280
  E  CC P C P                    (5x5)   FC-5120
  F  C P C P C P                 (5x5)   FC-5120
  G  C P C P C P C P             (5x5)   FC-1280

The text says "3 fully connected layers ... the third classifying", and Table 3 shows
FC-800 below the first FC row, so each network ends FC-<first> -> FC-800 -> FC-classes ->
softmax, with ReLU after the hidden FCs and dropout 0.5 after the first two FCs when
enabled. Note: for D, F and G the table's first FC number equals the flattened feature
size at 128x128 (8*8*20, 16*16*20, 8*8*20), so it may instead name the FC input; the widths
are configurable (``fc_units``) for that reading.
"""
import flax.linen as nn

from medjax.kernels import XLA_CPU, Conv, Dense, max_pool

# Variant -> (kernel size, layer string, first FC width).
VARIANTS = {
    "A": (3, "C P C P C P", 4500),
    "B": (3, "C C P C C P C C P", 4500),
    "C": (3, "C C P C C P C C C P", 4500),
    "D": (3, "C C P C C P C C P C C P", 1280),
    "E": (5, "C C P C P", 5120),
    "F": (5, "C P C P C P", 5120),
    "G": (5, "C P C P C P C P", 1280),
}


class IrmaCNN(nn.Module):
  """Configuration ``variant`` of the paper; ``fc_units`` overrides the FC widths."""
  num_classes: int
  variant: str = "C"
  filters: int = 20
  fc_units: tuple[int, ...] | None = None
  dropout: float = 0.5
  use_dropout: bool = True
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.variant not in VARIANTS:
      raise ValueError(f"IRMA CNN variant {self.variant!r} unknown; expected one of "
                       f"{sorted(VARIANTS)}")
    kernel, plan, first_fc = VARIANTS[self.variant]
    fc_units = self.fc_units or (first_fc, 800)
    features = {}
    n_conv = n_pool = 0
    for layer in plan.split():
      if layer == "C":
        n_conv += 1
        x = Conv(self.filters, (kernel, kernel), padding="SAME", activation=nn.relu,
                 kernels=self.kernels, name=f"conv{n_conv}")(x)
      else:
        n_pool += 1
        x = max_pool(x, (2, 2), (2, 2), kernels=self.kernels)
        features[f"pool{n_pool}"] = x
    x = x.reshape((x.shape[0], -1))
    for i, units in enumerate(fc_units, start=1):
      x = nn.relu(Dense(units, kernels=self.kernels, name=f"fc{i}")(x))
      if self.use_dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      features[f"fc{i}"] = x
    features["pre_logits"] = x
    logits = Dense(self.num_classes, kernels=self.kernels, name="classifier")(x)
    return logits, features
