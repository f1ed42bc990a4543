"""What a refit trains: the champion's searched values and, as a control, the defaults of the same keys,
for the steps a plain hpo/train.py run trains in the same minutes."""

from data_pipeline.dataset import plan_split
from hpo.config import SMOKE, Config
from hpo.refit import (
    CHAMPION, DEFAULTS, REFIT_STEPS_PARAM, REFIT_TIME_CAP, candidates, pace_of, plain_pace, plain_run_steps,
    refit_config, refit_steps,
)
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


def test_a_refit_budget_is_counted_in_steps_with_time_to_spare():
    search = Config().override({"train.max_steps": 400, "train.eval_every": 25})
    refit = refit_config(search, minutes=8, steps=refit_steps(10.4, 8), fast=False, time_cap=REFIT_TIME_CAP)
    assert refit.train.max_steps == 4992  # 10.4 steps/s for 480 s, what hpo/train.py trains at that pace
    assert refit.train.time_budget_s == 480 * REFIT_TIME_CAP and refit.train.eval_every == Config().train.eval_every


def test_the_plain_pace_is_timed_on_a_node_where_a_refit_runs(ray_cluster, anatomical):
    train_items, _ = plan_split([str(anatomical)])
    pace = plain_pace(Config().override(SMOKE), train_items, cpus=1, gpus=0, seconds=3)
    # A step of the smoke model takes milliseconds; timing from the first step (oneDNN's set-up)
    # or counting stamps that no step took would give a rate far off, and nothing a failure.
    assert 5 < pace < 5000


def test_the_pace_drops_a_spell_when_the_cores_were_taken():
    steady = [0.1] * 200  # 10 steps/s
    slowed = steady[:80] + [0.4] * 40 + steady[120:]  # a fifth of the steps at a quarter of the pace
    stamps = [sum(slowed[:k]) for k in range(len(slowed) + 1)]
    assert abs(pace_of(stamps) - 10.0) < 1e-6  # the mean over the whole span: 200 steps in 32 s, 6.25/s
    # What slows every step is kept: that holds a plain run up too.
    assert abs(pace_of([0.125 * k for k in range(201)]) - 8.0) < 1e-6


def test_a_resumed_search_refits_with_the_budget_it_measured(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.create_run(client.create_experiment("x")).info.run_id
    client.log_param(parent, REFIT_STEPS_PARAM, 5123)
    # No pace is timed (it would need the search's data and a Ray cluster: None here).
    assert plain_run_steps(client, parent, setup=None, plan=None, minutes=8) == 5123


def test_a_search_times_its_refit_budget_once_and_records_it(ray_cluster, tmp_path, anatomical):
    import ray

    from hpo.resources import TrialResources
    from hpo.trial import TrialSetup

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.create_run(client.create_experiment("x")).info.run_id
    train_items, _ = plan_split([str(anatomical)])
    setup = TrialSetup(base_config=Config().override(SMOKE).to_dict(), train_items=train_items, val_cases=ray.put([]),
                       workers=1, cpus_per_worker=1, gpus_per_worker=0, data_tasks=1, storage_path=str(tmp_path))
    plan = TrialResources(workers=1, cpus_per_worker=1, gpus_per_worker=0, data_cpus_per_trial=0.25, max_concurrent=1)
    steps = plain_run_steps(client, parent, setup, plan, minutes=0.5, seconds=3)
    run = client.get_run(parent)
    assert int(run.data.params[REFIT_STEPS_PARAM]) == steps
    assert steps == refit_steps(run.data.metrics["refit/plain_steps_per_s"], 0.5)
    assert plain_run_steps(client, parent, None, None, minutes=0.5) == steps  # not timed again
