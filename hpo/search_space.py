"""The search space: one pure, define-by-run function whose keys are config field names.

Ranges live here and nowhere else. Optuna's TPE samples it through Ray Tune's OptunaSearch; a test
feeds it `optuna.trial.FixedTrial`. Keys the user fixes for the whole search (`--set`) are left out,
so the searcher never proposes a value that a trial would not use.

Trial processes import this module for `TRIAL_INDEX`; Optuna is imported only where a study is made.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from models.upsample import UPSAMPLERS

if TYPE_CHECKING:
    import optuna

TRIAL_INDEX = "trial_index"  # in each trial's config: 0, 1, 2, ... in the order the searcher proposed them


def search_space(trial: optuna.Trial, fixed: Collection[str] = (), augment: bool = False) -> dict[str, Any] | None:
    """The searched keys; with `augment`, the patch augmentation too (data_pipeline/augment.py)."""

    def log_uniform(name: str, low: float, high: float) -> None:
        if name not in fixed:
            trial.suggest_float(name, low, high, log=True)

    def uniform(name: str, low: float, high: float) -> None:
        if name not in fixed:
            trial.suggest_float(name, low, high)

    def one_of(name: str, choices: list[str]) -> None:
        if name not in fixed:
            trial.suggest_categorical(name, choices)

    log_uniform("optim.lr_g", 1e-4, 3e-3)
    log_uniform("optim.lr_d", 1e-5, 1e-3)
    log_uniform("loss.content_weight", 0.5, 2.0)
    log_uniform("loss.gradient_weight", 0.01, 2.0)
    log_uniform("loss.adversarial_weight", 1e-4, 3e-2)
    one_of("loss.content", ["l1", "mse"])
    one_of("model.upsampler", list(UPSAMPLERS))
    if augment:
        one_of("data.augment_flips", [False, True])
        uniform("data.augment_gamma", 0.0, 0.4)
        uniform("data.augment_scale", 0.0, 0.3)
    return None


def searched_keys(fixed: Collection[str] = (), augment: bool = False) -> list[str]:
    """The config keys a search varies, in the order the space suggests them."""
    import optuna

    trial = optuna.create_study().ask()
    search_space(trial, fixed, augment)
    return list(trial.params)


def numbered_space(trial: optuna.Trial, fixed: Collection[str] = (), augment: bool = False) -> dict[str, int]:
    """The search space, plus the trial's number in the study: it seeds the trial's patch stream.

    It lives in a module, not in the script: OptunaSearch pickles it into the search's state, and
    a resumed search must find it again by its module's name (never `__main__`).
    """
    search_space(trial, fixed, augment)
    return {TRIAL_INDEX: trial.number}
