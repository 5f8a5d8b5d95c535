"""Each frozen-feature system's hyper-parameters live in its own config with the values
the papers' settings give (paper 5: VLAD; paper 3: the CAE and table 2's baselines), and
``configs/common.py`` holds only what both share."""
import pytest

from configs import cae_imageclef16, common, vlad

SHARED = {"pipeline", "seed", "num_seeds", "data", "pp_eval", "backbone", "features_dir", "features", "compute_dtype",
          "aggregation", "svm"}


def test_common_holds_only_the_shared_fields():
  config = common.frozen_features(dataset="chest_xray", backbone="vgg19", aggregation="avgpool",
                                  scale=224, seed=0)
  assert set(config) == SHARED
  assert config.svm.C == 1.0 and config.svm.max_iter == 1000 and config.svm.tol == 1e-5


def test_vlad_config_values():
  config = vlad.get_config("aggregation=vlad,k=256")
  assert set(config) == SHARED | {"vlad"}
  assert dict(config.vlad) == {
      "k": 256, "max_descriptors": 100_000, "descriptor_l2": False, "descriptor_dims": 256,
      "descriptor_pca_above": 512, "power_alpha": 0.0, "intra_norm": False,
      "kmeans_max_iter": 100, "kmeans_tol": 1e-4, "pca_dims": 512}
  smoke = vlad.get_config("smoke,aggregation=vlad")
  assert (smoke.vlad.max_descriptors, smoke.vlad.kmeans_max_iter, smoke.vlad.pca_dims) == (
      5000, 20, 64)
  assert smoke.data.train_split == "train[:256]+val" and smoke.data.test_split == "test[:128]"


def test_cae_config_values():
  config = cae_imageclef16.get_config("filters=512,loss=sum")
  assert set(config) == SHARED | {"cae", "baseline", "ssae"}
  assert (config.cae.filters, config.cae.loss_reduction, config.cae.batch_size,
          config.cae.num_epochs, config.cae.steps_per_call) == (512, "sum", 512, 100, 4)
  assert config.cae.optimizer.learning_rate == 1e-5 and config.cae.optimizer.momentum == 0.9
  assert config.cae.optimizer.schedule == "plateau"
  assert dict(config.baseline) == {"components": 256, "alpha": 0.1, "max_iter": 200}
  assert config.ssae.hidden == (512, 256) and config.ssae.max_iter == 400
  smoke = cae_imageclef16.get_config("smoke,dataset=chest_xray")
  assert (smoke.cae.filters, smoke.cae.num_epochs, smoke.cae.batch_size) == (64, 2, 64)
  assert smoke.baseline.components == 32 and smoke.ssae.hidden == (64, 32)
  assert smoke.data.train_split == "train[:256]+val"


def test_each_config_names_the_other_for_the_other_systems_aggregations():
  with pytest.raises(ValueError, match="cae_imageclef16.py"):
    vlad.get_config("aggregation=cae")
  with pytest.raises(ValueError, match="configs/vlad.py"):
    cae_imageclef16.get_config("aggregation=vlad")
