import json

import pytest

from hpo.config import Config, parse_overrides


def test_round_trip_and_flat_keys():
    config = Config().override({"optim.lr_g": 1e-3, "model.upsampler": "resize_conv"})
    assert Config.from_dict(config.to_dict()) == config
    assert config.flat()["optim.lr_g"] == 1e-3 and config.flat()["model.upsampler"] == "resize_conv"


def test_unknown_keys_fail_loudly():
    with pytest.raises(KeyError, match="optim.lr_gen"):
        Config().override({"optim.lr_gen": 1e-3})
    with pytest.raises(KeyError, match="optimizer.lr_g"):
        Config().override({"optimizer.lr_g": 1e-3})


def test_command_line_strings_take_the_field_type():
    config = Config().override(parse_overrides(["optim.lr_g=2e-4", "model.batch_norm=true", "data.patch_size=12"]))
    assert config.optim.lr_g == 2e-4 and config.model.batch_norm is True and config.data.patch_size == 12
    with pytest.raises(ValueError, match="model.batch_norm"):
        Config().override({"model.batch_norm": "maybe"})


@pytest.mark.parametrize(
    "key, value", [("model.upsampler", "bicubic"), ("data.degradation", "box"), ("data.scale_factor", 5),
                   ("data.scale_factor", "1,1,1"), ("data.noise_max", 0.6), ("train.eval_every", 0),
                   ("data.noise_estimator", "mad")]
)
def test_invalid_values(key, value):
    with pytest.raises(ValueError):
        Config().override({key: value})


def test_scale_factor_is_one_int_or_three():
    assert Config().override({"data.scale_factor": "1,1,4"}).data.factors == (1, 1, 4)
    assert Config().override({"data.scale_factor": "2,2,2"}).data.scale_factor == 2  # equal factors: one int
    nested = Config().override({"data.scale_factor": "2,2,3"}).to_dict()
    assert Config.from_dict(json.loads(json.dumps(nested))).data.factors == (2, 2, 3)  # a checkpoint's JSON


def test_a_config_saved_before_the_noise_estimator_was_a_setting_keeps_the_estimator_it_trained_with():
    saved = Config().to_dict()
    assert Config.from_dict(saved).data.noise_estimator == "two_band"
    for earlier_default in ("second_difference", "third_difference"):  # models trained before it changed
        saved["data"]["noise_estimator"] = earlier_default
        assert Config.from_dict(saved).data.noise_estimator == earlier_default
    del saved["data"]["noise_estimator"]  # what checkpoints and MLflow models written before it hold
    old = Config.from_dict(saved)
    assert old.data.noise_estimator == "haar" and old.data.acquisition().noise_estimator == "haar"
    assert Config.from_dict({"optim": {"lr_g": 1e-3}}).data.noise_estimator == "two_band"
