"""Refit: after the search, its best configuration trains again with a full budget, beside the defaults.

A search ranks configurations with short trials (400 steps, most stopped after 25): enough to
tell configurations apart, too short for a generator worth using. So the search ends by training
the champion's configuration again from scratch, and as a control the hand-picked defaults, each
with the budget of one plain `hpo/train.py` run (`--refit-minutes`, 8 by default) with the resources
that run would have (a whole node's CPUs, or a trial's GPUs); two CPU refits on one node share it
and train at once (`hpo.resources.share_for_refits`). They are trials of one more Tune run,
`<name>-refit`, so they stream their patches, checkpoint, resume and log to MLflow as trials do:
child runs of the search named `refit-champion` and `refit-defaults`, tagged `mri_sr.refit`. Both
are scored on the whole held-out regions (`heldout/val/psnr`); `hpo/promote.py` offers the better.
Starting afresh beat continuing from the trial's checkpoint (docs/search.md, "Refit").

The budget is counted in steps: as many as `hpo/train.py` trains in `--refit-minutes` where a refit
runs, measured there first (`plain_pace`). A refit trains inside a Tune trial fed by Ray Data, 5 to
20 % slower than a plain process; with a time budget it would train fewer steps than the plain run
it is compared with, and lose to it for that reason alone.
"""

import dataclasses
import itertools
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import ray
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from data_pipeline.dataset import PATCHES_PER_CHUNK, SplitItem, chunk_batches, plan_chunks
from hpo.config import Config
from hpo.progress import ConsoleProgress
from hpo.search_space import TRIAL_INDEX
from hpo.tracking import HELDOUT_PREFIX, REFIT_KEY, MlflowTracker, TrialView, remove_lost_trials
from hpo.trial import DIVERGED, TrialSetup, checkpoint_path, run_trial
from hpo.validation import METRIC

CHAMPION, DEFAULTS = "champion", "defaults"
# Refit runs' patch streams: apart from every trial's (trial numbers stay far below this).
FIRST_REFIT_INDEX = 1_000_000
# The plain loop's pace: steps timed after the first PACE_WARMUP_STEPS (oneDNN and cuDNN pick their
# kernels there), for PACE_SECONDS in all, in PACE_WINDOWS spans (see `pace_of`). A refit may take
# up to REFIT_TIME_CAP times its minutes to train its steps before it stops anyway.
PACE_WARMUP_STEPS = 10
PACE_SECONDS = 20.0
PACE_WINDOWS = 5
REFIT_TIME_CAP = 2.0
REFIT_PROGRESS_S = 60.0  # a refit trains for minutes: a line on the console this often
REFIT_STEPS_PARAM = "refit.steps"  # on the search's parent run: the refit's step budget, timed once


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


def plain_pace(config: Config, items: list[SplitItem], cpus: float, gpus: float, seconds: float = PACE_SECONDS) -> float:
    """Steps per second of `hpo/train.py`'s loop with `config`, timed by a Ray task where a refit runs."""
    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(time_plain_loop)
    return ray.get(task.remote(config, items, cpus, gpus, seconds))


def time_plain_loop(config: Config, items: list[SplitItem], cpus: float, gpus: float, seconds: float) -> float:
    """Steps per second of the plain loop in this process: the model and loop of a plain run, fed by
    patches cut in the process as `hpo/train.py` feeds it, without evaluations."""
    import torch

    from hpo.loop import Runtime, train
    from hpo.runtime import set_threads

    set_threads(cpus)
    spec, batch = config.patch_spec(), config.data.batch_size
    stamps: list[float] = []

    def timed():
        chunks = itertools.cycle(plan_chunks(items, 4 * PATCHES_PER_CHUNK, config.train.seed))
        for pair in chunk_batches(chunks, spec, batch):
            stamps.append(time.perf_counter())
            yield pair

    budget = {"train.time_budget_s": seconds, "train.max_steps": 0, "train.eval_every": 1 << 30}
    device = torch.device("cuda" if gpus else "cpu")
    train(config.override(budget), timed(), None, lambda metrics, checkpoint: None, Runtime(device=device))
    if len(stamps) - 1 - PACE_WARMUP_STEPS < PACE_WINDOWS:
        raise RuntimeError(f"the plain loop trained {len(stamps)} steps in {seconds:g} s: too few to time")
    return pace_of(stamps[PACE_WARMUP_STEPS:])


def pace_of(stamps: list[float], windows: int = PACE_WINDOWS) -> float:
    """Steps per second from the times at which steps began: the median of `windows` spans' means.

    A span's mean keeps what slows every step (the rest of the node's work, which holds a plain run
    up too; the median step overstates the pace). The median of the spans drops a spell in which
    another tenant of a shared machine took the cores.
    """
    steps = len(stamps) - 1
    bounds = [round(k * steps / windows) for k in range(windows + 1)]
    return statistics.median((b - a) / (stamps[b] - stamps[a]) for a, b in itertools.pairwise(bounds))


def refit_steps(pace: float, minutes: float) -> int:
    """What a plain run at `pace` steps per second trains in `minutes`."""
    return max(1, math.ceil(pace * minutes * 60))


def plain_run_steps(client: MlflowClient, parent: str, setup: TrialSetup, plan, minutes: float,
                    seconds: float = PACE_SECONDS) -> int:
    """The refit's step budget: `hpo/train.py`'s pace where a refit runs (`plan`'s resources), times the minutes.

    Recorded on the parent run (`refit.steps`), so a resumed search refits with the same budget.
    """
    recorded = client.get_run(parent).data.params.get(REFIT_STEPS_PARAM)
    if recorded is not None:
        return int(recorded)
    print(f"refit budget: timing hpo/train.py's loop for {seconds:g} s where a refit runs ...", flush=True)
    pace = plain_pace(Config.from_dict(setup.base_config), setup.train_items, plan.cpus_per_worker,
                      plan.gpus_per_worker, seconds)
    steps = refit_steps(pace, minutes)
    print(f"refit budget: {pace:.2f} steps/s, {steps} steps in {minutes:g} min", flush=True)
    client.log_param(parent, REFIT_STEPS_PARAM, steps)
    client.log_metric(parent, "refit/plain_steps_per_s", pace)
    return steps


def refit_config(config: Config, minutes: float, steps: int, fast: bool, time_cap: float = 1.0) -> Config:
    """The search's fixed config with the refit's budget: `steps`, or `minutes` x `time_cap`, whichever ends first."""
    budget = {"train.time_budget_s": minutes * 60 * time_cap, "train.max_steps": steps}
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
    checkpoint: str  # its last checkpoint, in the search's storage


class Interrupted(Exception):
    """A Tune run stopped by Ctrl-C: Tune saves its state and returns from fit() with trials left."""


def check_finished(results, expected: int, what: str) -> None:
    """Raise Interrupted when fewer than `expected` trials of a Tune run ended (done or failed)."""
    if (left := expected - results.num_terminated - results.num_errors) > 0:
        raise Interrupted(f"{left} of {expected} {what} unfinished")


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
            name=name, storage_path=storage, verbose=0,
            callbacks=[tracker, ConsoleProgress("refit", len(refits), every_s=REFIT_PROGRESS_S)],
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
    check_finished(results, len(refits), "refits")
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
        done.append(RefitResult(candidate, run_id, step, scores, checkpoint))
    return sorted(done, key=lambda r: r.scores[METRIC], reverse=True)


def refit_setup(setup: TrialSetup, config: Config, plan, storage_path: str) -> TrialSetup:
    return dataclasses.replace(
        setup, base_config=config.to_dict(), workers=plan.workers, cpus_per_worker=plan.cpus_per_worker,
        gpus_per_worker=plan.gpus_per_worker, data_tasks=plan.data_tasks, storage_path=storage_path,
    )
