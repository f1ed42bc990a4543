"""The search space: one pure, define-by-run function whose keys are config field names.

Ranges live here and nowhere else. Optuna's TPE samples it through Ray Tune's OptunaSearch; a test
feeds it `optuna.trial.FixedTrial`.
"""

from typing import Any

import optuna

from models.upsample import UPSAMPLERS


def search_space(trial: optuna.Trial) -> dict[str, Any] | None:
    trial.suggest_float("optim.lr_g", 1e-4, 3e-3, log=True)
    trial.suggest_float("optim.lr_d", 1e-5, 1e-3, log=True)
    trial.suggest_float("loss.content_weight", 0.5, 2.0, log=True)
    trial.suggest_float("loss.gradient_weight", 0.01, 2.0, log=True)
    trial.suggest_float("loss.adversarial_weight", 1e-4, 3e-2, log=True)
    trial.suggest_categorical("loss.content", ["l1", "mse"])
    trial.suggest_categorical("model.upsampler", list(UPSAMPLERS))
    return None
