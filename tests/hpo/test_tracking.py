"""MLflow catches up with Tune's own record when a killed search lost queued writes; UI links."""

import re

from ray import tune
from mlflow.tracking import MlflowClient

from hpo.tracking import TRIAL_TAG, MlflowTracker, ensure_experiment, find_or_create_parent, runs_page


def reports(config):
    for step in (10, 20):
        tune.report({"step": step, "val/psnr": config["base"] + step, "train/loss_g": 1.0 / step})


def test_catch_up_fills_the_runs_of_trials_tune_ended_without_mlflow(ray_cluster, tmp_path):
    # Tune ran two trials with no tracker at all: everything MLflow should hold was "lost".
    results = tune.Tuner(
        reports, param_space={"base": tune.grid_search([1.0, 2.0])},
        run_config=tune.RunConfig(name="lost", storage_path=str(tmp_path / "ray"), verbose=0),
    ).fit()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, uri, "e")
    parent = find_or_create_parent(client, experiment, "lost", {})
    # One trial's run exists, as a killed search leaves it: made, no parameters, still RUNNING.
    first = results[0].metrics["trial_id"]
    client.create_run(experiment, tags={"mlflow.parentRunId": parent, TRIAL_TAG: first})

    tracker = MlflowTracker(uri, experiment, parent, str(tmp_path / "ray"), {"model.base_channels": 8})
    assert tracker.catch_up(results) == 2
    runs = {r.data.tags[TRIAL_TAG]: r for r in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")}
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs.values())
    for result in results:
        run = runs[result.metrics["trial_id"]]
        assert run.data.params["base"] == str(result.config["base"]) and run.data.params["model.base_channels"] == "8"
        history = client.get_metric_history(run.info.run_id, "val/psnr")
        assert [(m.step, m.value) for m in history] == [(10, result.config["base"] + 10), (20, result.config["base"] + 20)]
    assert tracker.catch_up(results) == 0  # nothing left to write: running it again changes nothing


def test_every_mlflow_ui_link_the_project_prints_asks_for_model_training_mode():
    from hpo.runtime import PROJECT_ROOT

    # The code that prints links (not the docs, which people edit freely).
    texts = [*(PROJECT_ROOT / "hpo").glob("*.py"), *(PROJECT_ROOT / "cluster").iterdir()]
    links = [link for path in texts if path.is_file() for link in re.findall(r"\S*/#/\S*", path.read_text())]
    assert links  # the search's and the cluster start script's, at least
    assert all("workflowType=machine_learning" in link for link in links), links
    assert runs_page("http://h:5000/", "7") == "http://h:5000/#/experiments/7?workflowType=machine_learning"
