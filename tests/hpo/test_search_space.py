import optuna
import pytest

from hpo.config import Config
from hpo.search_space import search_space
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
