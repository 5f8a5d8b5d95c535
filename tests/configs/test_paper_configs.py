"""The papers' settings as the configs name them (no training: config building only)."""
import pytest

from configs import alexnet_anatomy, irma_cnn


@pytest.mark.parametrize("arg, dropout, augmented", [
    ("", True, False),                         # C's 92.69 %: dropout, no augmentation
    ("variant=G", True, True),                 # E-G: both (Table 7)
    ("variant=A", False, False),               # A's 43.1 %: neither
    ("variant=C,augment=true", True, True),
    ("variant=C,dropout=false", False, False),
])
def test_irma_headline_settings(arg, dropout, augmented):
  config = irma_cnn.get_config(arg)
  assert config.model.use_dropout is dropout
  assert ("random_rot90" in config.pp_train) is augmented
  assert config.pp_eval.endswith("subtract_mean")


def test_irma_three_and_four_classes_choose_the_builder_configs():
  assert irma_cnn.get_config("variant=E,classes=3").data.name == "irma/anatomy3"
  assert irma_cnn.get_config("variant=G,classes=4").data.name == "irma/anatomy4"
  assert irma_cnn.get_config("variant=C").data.name == "irma"
  with pytest.raises(ValueError, match="dataset=irma only"):
    irma_cnn.get_config("dataset=chest_xray,classes=3")
  with pytest.raises(ValueError, match="expected paper, true or false"):
    irma_cnn.get_config("dropout=maybe")


def test_irma_sweep_has_the_dropout_by_augmentation_grid_for_c():
  points = [p for p in irma_cnn.sweep() if p.startswith("variant=C,")]
  assert sorted(points) == sorted(f"variant=C,dropout={d},augment={a}"
                                  for d in ("true", "false") for a in ("true", "false"))


def test_anatomy_comparison_arms():
  assert alexnet_anatomy.sweep() == ["model=modified", "model=lenet", "model=alexnet",
                                     "model=googlenet"]
  assert alexnet_anatomy.get_config("model=googlenet").model.variant == "2014"
  assert alexnet_anatomy.get_config("model=lenet").model.variant == "caffe"
  assert alexnet_anatomy.get_config("conv2_pool=true").model.pool_after_conv2 is True
  assert "pool_after_conv2" not in alexnet_anatomy.get_config().model
  with pytest.raises(ValueError, match="conv2_pool applies to model=modified"):
    alexnet_anatomy.get_config("model=alexnet,conv2_pool=true")


def test_vlad_keeps_vgg19_descriptors_and_concatenates_scales():
  from configs import vlad
  config = vlad.get_config("dataset=chest_xray")
  assert config.vlad.descriptor_pca_above >= 512  # VGG19 block5_pool: 512-d, no PCA
  assert config.features.scales == (224,)
  assert vlad.get_config("scales=224+544+864").features.scales == (224, 544, 864)
  with pytest.raises(ValueError, match="aggregation=avgpool"):
    vlad.get_config("aggregation=vlad,scales=224+544")
