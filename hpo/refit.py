"""Refit: after the search, its best configuration trains again with a full budget, beside the defaults.

A search ranks configurations with short trials (400 steps, most stopped after 25): enough to
tell configurations apart, too short for a generator worth using. So the search ends by training
the champion's configuration again from scratch, and as a control the hand-picked defaults, each
with the budget of one plain `hpo/train.py` run (`--refit-minutes`, 8 by default) and the resources
that run would have (a whole node's CPUs, or a trial's GPUs). They are trials of one more Tune run,
`<name>-refit`, so they stream their patches, checkpoint, resume and log to MLflow as trials do:
child runs of the search named `refit-champion` and `refit-defaults`, tagged `mri_sr.refit`. Both
are scored on the whole held-out regions (`heldout/val/psnr`); `hpo/promote.py` offers the better.
Starting afresh beat continuing from the trial's checkpoint (README, "Refit").
"""

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from hpo.config import Config
from hpo.search_space import TRIAL_INDEX
from hpo.tracking import HELDOUT_PREFIX, REFIT_KEY, MlflowTracker, TrialView, remove_lost_trials
from hpo.trial import DIVERGED, TrialSetup, checkpoint_path, run_trial
from hpo.validation import METRIC

CHAMPION, DEFAULTS = "champion", "defaults"
# Refit runs' patch streams: apart from every trial's (trial numbers stay far below this).
FIRST_REFIT_INDEX = 1_000_000


def candidates(best: dict[str, Any], defaults: dict[str, Any], control: bool = True) -> dict[str, dict[str, Any]]:
    """{"champion": the best trial's searched values, "defaults": the same keys' defaults}.

    The control is left out when asked, or when the champion is the defaults.
    """
    champion = {key: value for key, value in best.items() if key != TRIAL_INDEX}
    chosen = {CHAMPION: champion}
    defaults = {key: defaults[key] for key in champion}
    if control and defaults != champion:
        chosen[DEFAULTS] = defaults
    return chosen


def refit_config(config: Config, minutes: float, steps: int, fast: bool) -> Config:
    """The search's fixed config with the refit's budget: whichever of `minutes` and `steps` ends first."""
    budget = {"train.time_budget_s": minutes * 60, "train.max_steps": steps}
    if not fast:
        budget["train.eval_every"] = Config().train.eval_every  # as hpo/train.py evaluates
    return config.override(budget)


def run_refit(params: dict[str, Any], setup: TrialSetup, refits: dict[str, dict[str, Any]]) -> None:
    """The Tune trainable of a refit: the candidate's values through the search's own trial."""
    name = params[REFIT_KEY]
    run_trial({**refits[name], TRIAL_INDEX: FIRST_REFIT_INDEX + list(refits).index(name)}, setup)


@dataclass(frozen=True)
class RefitResult:
    name: str  # "champion" or "defaults"
    run_id: str  # its MLflow child run
    steps: int
    scores: dict[str, float]  # on the whole held-out regions: val/psnr, val/ssim, ...


def make_tuner(setup: TrialSetup, refits: dict[str, dict[str, Any]], tracker: MlflowTracker, max_concurrent: int,
               storage: str, name: str, resume: bool) -> tune.Tuner:
    trainable = tune.with_resources(tune.with_parameters(run_refit, setup=setup, refits=refits), setup.tune_resources())
    if resume:
        return tune.Tuner.restore(f"{storage}/{name}", trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={REFIT_KEY: tune.grid_search(list(refits))},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=[tracker],
            failure_config=tune.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


def refit(
    setup: TrialSetup, refits: dict[str, dict[str, Any]], tracker: MlflowTracker, max_concurrent: int,
    storage: str, name: str, score, resume: bool = False,
) -> list[RefitResult]:
    """Train each candidate, score its last checkpoint with `score(checkpoint)`, log the scores on its run."""
    results = make_tuner(setup, refits, tracker, max_concurrent, storage, name, resume).fit()
    tracker.close()
    client = MlflowClient(tracker.uri)
    trial_ids = {r.metrics["trial_id"] for r in results if r.metrics}
    remove_lost_trials(client, tracker.experiment_id, tracker.parent_run_id, trial_ids, refit=True)
    done = []
    for result in results:
        if not result.metrics or result.metrics.get(DIVERGED) or result.error is not None:
            continue
        checkpoint = checkpoint_path(result.metrics, result.path)
        if checkpoint is None:
            continue
        candidate = result.config[REFIT_KEY]
        run_id = tracker.run_id(TrialView(result.metrics["trial_id"], dict(result.config), result.path))
        scores = score(checkpoint)
        now = int(time.time() * 1000)
        step = int(result.metrics.get("step", 0))
        client.log_batch(run_id, metrics=[Metric(f"{HELDOUT_PREFIX}{k}", v, now, step) for k, v in scores.items()])
        done.append(RefitResult(candidate, run_id, step, scores))
    return sorted(done, key=lambda r: r.scores[METRIC], reverse=True)


def refit_setup(setup: TrialSetup, config: Config, plan, storage_path: str) -> TrialSetup:
    return dataclasses.replace(
        setup, base_config=config.to_dict(), workers=plan.workers, cpus_per_worker=plan.cpus_per_worker,
        gpus_per_worker=plan.gpus_per_worker, data_tasks=plan.data_tasks, storage_path=storage_path,
    )
