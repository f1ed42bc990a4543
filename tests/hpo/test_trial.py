"""A trial survives losing its worker, in both kinds: Tune restarts a one-worker trial from its
checkpoint, Ray Train restarts a DDP run from its own. A diverged trial ends at once."""

import os
import signal
import threading
import time

import psutil
import pytest
import ray
from ray import tune

from data_pipeline.acquisition import Acquisition
from data_pipeline.dataset import make_pair, plan_split
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import read_volume
from hpo.config import SMOKE, Config
from hpo.trial import DIVERGED, TRIAL_INDEX, TrialSetup, run_trial
from hpo.validation import METRIC, make_cases

pytestmark = pytest.mark.slow


def make_setup(anatomical, tmp_path, workers: int, **config) -> TrialSetup:
    train_items, val_items = plan_split([str(anatomical)])
    cases = make_cases([make_pair(read_volume(anatomical), "validation", Acquisition("gaussian", 2), IntensityNorm())], 2)
    return TrialSetup(
        base_config=Config().override(SMOKE | config).to_dict(),
        train_items=train_items,
        val_cases=ray.put(cases),
        workers=workers,
        cpus_per_worker=1.0 if workers == 1 else 0.8,
        gpus_per_worker=0.0,
        data_tasks=1,
        storage_path=str(tmp_path / "train"),
    )


def tuner(setup: TrialSetup, tmp_path, name: str, max_failures: int = 2) -> tune.Tuner:
    return tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, setup=setup), setup.tune_resources()),
        param_space={TRIAL_INDEX: 0},
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )


def trainer_pids(workers: int) -> list[int]:
    # One worker: the Tune trial process trains. Several: Ray Train's worker actors do. Found by
    # the titles Ray gives its processes (the state API lists only the first 100 actors of a
    # session, and a long test session has many more).
    title = "ray::ImplicitFunc" if workers == 1 else "ray::RayTrainWorker"
    return [p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].startswith(title)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, tmp_path, anatomical, workers):
    setup = make_setup(anatomical, tmp_path, workers, **{"train.max_steps": 400, "train.eval_every": 20})
    results = []
    fit = threading.Thread(target=lambda: results.append(tuner(setup, tmp_path, "kill").fit()))
    fit.start()
    deadline = time.time() + 300
    # Two complete checkpoints of this trial's kind (Tune's for one worker, Ray Train's for
    # several), then a few of Train's polls (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S is 0.5 s here): Ray
    # Train registers a checkpoint only when its controller has polled every rank's report, and
    # checkpoints came 0.4 s apart, so a kill right after the second found none registered.
    where = tmp_path / ("kill" if workers == 1 else "train")
    while time.time() < deadline and len([c for c in where.rglob("checkpoint_*") if (c / "state.pt").is_file()]) < 2:
        time.sleep(0.2)
    time.sleep(2.0)
    pids = trainer_pids(workers)
    assert len(pids) == workers, "training ended before a worker could be killed"
    os.kill(pids[-1], signal.SIGKILL)
    fit.join(timeout=400)
    result = results[0][0]
    assert result.error is None
    assert result.metrics["step"] == 400
    assert result.metrics["resumed_from_step"] >= 20  # restarted from a checkpoint, not from scratch
    assert result.metrics["resumed_from_step"] % 20 == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_diverged_trial_ends_at_once_without_a_retry(ray_cluster, tmp_path, anatomical, workers):
    # Adam steps of 1e30 overflow the generator's activations at the second step.
    setup = make_setup(anatomical, tmp_path, workers, **{"optim.lr_g": 1e30, "train.max_steps": 40})
    result = tuner(setup, tmp_path, "diverge").fit()[0]
    assert result.error is None  # ended, not crashed: nothing for Tune or Ray Train to retry
    assert result.metrics[DIVERGED] == 1.0 and result.metrics["step"] == 1
    assert result.metrics[METRIC] != result.metrics[METRIC]  # NaN: Optuna records the trial as failed
    assert result.metrics["training_iteration"] == 1  # one report: no restart reported again
    assert "resumed_from_step" not in result.metrics
