import optuna
import pytest

from hpo.config import Config
from hpo.search_space import search_space, searched_keys
from models.upsample import UPSAMPLERS

FIXED = {
    "optim.lr_g": 1e-3,
    "optim.lr_d": 1e-4,
    "loss.content_weight": 1.0,
    "loss.gradient_weight": 0.3,
    "loss.adversarial_weight": 1e-3,
    "loss.content": "mse",
    "model.upsampler": "resize_conv",
}


def test_every_searched_key_is_a_config_field():
    trial = optuna.trial.FixedTrial(FIXED)
    assert search_space(trial) is None
    assert trial.params == FIXED
    config = Config().override(trial.params)  # raises on a key the config does not have
    assert config.optim.lr_g == 1e-3 and config.model.upsampler == "resize_conv"


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_all_upsamplers_are_searched(upsampler):
    trial = optuna.trial.FixedTrial(FIXED | {"model.upsampler": upsampler})
    search_space(trial)
    assert trial.params["model.upsampler"] == upsampler


def test_out_of_range_values_are_refused():
    with pytest.raises(ValueError):
        search_space(optuna.trial.FixedTrial(FIXED | {"model.upsampler": "bicubic"}))


def test_keys_fixed_for_the_search_are_not_searched():
    trial = optuna.trial.FixedTrial({k: v for k, v in FIXED.items() if k != "optim.lr_g"})
    search_space(trial, fixed={"optim.lr_g"})
    assert "optim.lr_g" not in trial.params and len(trial.params) == len(FIXED) - 1
    assert searched_keys(fixed={"optim.lr_g", "model.upsampler"}) == [
        k for k in FIXED if k not in ("optim.lr_g", "model.upsampler")
    ]


def test_augmentation_is_searched_only_when_asked():
    augment = {"data.augment_flips": True, "data.augment_gamma": 0.2, "data.augment_scale": 0.1}
    trial = optuna.trial.FixedTrial(FIXED | augment)
    search_space(trial, augment=True)
    assert trial.params == FIXED | augment
    assert Config().override(trial.params).patch_spec().augment.flips  # real config fields
    assert searched_keys(augment=True)[-3:] == list(augment) and not set(augment) & set(searched_keys())
