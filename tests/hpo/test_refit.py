"""What a refit trains: the champion's searched values and, as a control, the defaults of the same keys."""

from hpo.config import Config
from hpo.refit import CHAMPION, DEFAULTS, candidates, refit_config
from hpo.search_space import TRIAL_INDEX

DEFAULTS_FLAT = Config().flat()


def test_the_champion_and_the_defaults_of_the_same_keys():
    best = {"optim.lr_g": 1.6e-3, "model.upsampler": "subpixel", TRIAL_INDEX: 14}
    chosen = candidates(best, DEFAULTS_FLAT)
    assert chosen == {
        CHAMPION: {"optim.lr_g": 1.6e-3, "model.upsampler": "subpixel"},
        DEFAULTS: {"optim.lr_g": DEFAULTS_FLAT["optim.lr_g"], "model.upsampler": DEFAULTS_FLAT["model.upsampler"]},
    }
    assert list(candidates(best, DEFAULTS_FLAT, control=False)) == [CHAMPION]


def test_a_champion_that_is_the_defaults_is_trained_once():
    best = {"optim.lr_g": DEFAULTS_FLAT["optim.lr_g"], TRIAL_INDEX: 0}
    assert list(candidates(best, DEFAULTS_FLAT)) == [CHAMPION]


def test_the_refit_budget_is_a_plain_training_run():
    search = Config().override({"train.max_steps": 400, "train.eval_every": 25, "train.time_budget_s": 86400.0})
    refit = refit_config(search, minutes=8, steps=0, fast=False)
    assert refit.train == Config().train  # what hpo/train.py gets: 8 minutes, evaluations every 250 steps
    assert refit_config(search, minutes=8, steps=8, fast=True).train.eval_every == 25
