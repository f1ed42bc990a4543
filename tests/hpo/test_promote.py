"""Champion/challenger promotion against a real MLflow store and registry, real generators."""

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from hpo import promote, train
from hpo.model_flavour import log_generator
from hpo.tracking import DATA_PARAM, MODEL_URI_TAG, PARENT_TAG, SEARCH_TAG, ensure_experiment
from models.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import ANATOMICAL

EXPERIMENT = "promotion"


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    """A trained generator, and a much worse copy of it (weights x3: it overshoots everywhere)."""
    good = tmp_path_factory.mktemp("good")
    assert train.main(["--fast", "--data", str(ANATOMICAL), "--output", str(good)]) == 0
    meta, state = load_checkpoint(good)
    state["generator"] = {k: v * 3 if v.is_floating_point() else v for k, v in state["generator"].items()}
    return {"good": good, "bad": save_checkpoint(tmp_path_factory.mktemp("bad"), meta, state)}


def add_search(client: MlflowClient, uri: str, experiment: str, name: str, checkpoint) -> str:
    """What a search leaves in MLflow: a parent run with its data, a child run with a generator."""
    parent = client.create_run(experiment, run_name=name, tags={SEARCH_TAG: name}).info.run_id
    client.log_param(parent, DATA_PARAM, json.dumps([str(ANATOMICAL)]))
    child = client.create_run(experiment, tags={PARENT_TAG: parent}).info.run_id
    client.log_metric(child, "val/psnr", 30.0)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=child):
        client.set_tag(child, MODEL_URI_TAG, log_generator(checkpoint))
    return child


def test_the_champion_moves_only_to_a_better_challenger(generators, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # never the registry an earlier test set for the process
    experiment = ensure_experiment(client, uri, EXPERIMENT)
    base = ["--experiment", EXPERIMENT, "--tracking-uri", uri]

    def champion() -> str:
        return str(client.get_model_version_by_alias("mri-sr-generator", "champion").version)

    def versions() -> int:
        return len(client.search_model_versions("name = 'mri-sr-generator'"))

    # No champion yet: the first search's best is promoted, whatever it scores.
    add_search(client, uri, experiment, "first", generators["bad"])
    assert promote.main(base + ["--search", "first"]) == 0
    assert champion() == "1" and "no champion yet" in capsys.readouterr().out

    # A better challenger takes the alias; both scores are on its version.
    add_search(client, uri, experiment, "better", generators["good"])
    assert promote.main(base) == 0  # the latest search by default
    assert champion() == "2" and "promoted" in capsys.readouterr().out
    version = client.get_model_version("mri-sr-generator", "2")
    assert version.tags[promote.JUDGED_ON_TAG] == "better"
    score = float(version.tags[promote.SCORE_TAG])
    assert f"{score:.2f} dB" in version.description and "against champion version 1" in version.description

    # A worse challenger is registered and scored, but the alias stays, with one line saying why.
    add_search(client, uri, experiment, "worse", generators["bad"])
    assert promote.main(base + ["--search", "worse"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert champion() == "2" and len(out) == 1 and out[0].startswith("kept models:/mri-sr-generator@champion")
    assert float(client.get_model_version("mri-sr-generator", "3").tags[promote.SCORE_TAG]) < score

    # Running it again changes nothing.
    assert promote.main(base + ["--search", "worse"]) == 0
    assert promote.main(base + ["--search", "better"]) == 0
    assert champion() == "2" and versions() == 3
    assert "already" in capsys.readouterr().out.splitlines()[-1]

    # --force overrides the comparison.
    assert promote.main(base + ["--search", "worse", "--force"]) == 0
    assert champion() == "3"


def test_each_model_is_scored_with_the_noise_map_it_was_trained_on(generators, tmp_path):
    """A champion trained before the noise estimator was a setting (Haar) and a challenger trained
    after it are scored on the same held-out data, each with the noise level read its own way."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = ensure_experiment(client, uri, EXPERIMENT)
    meta, state = load_checkpoint(generators["good"])
    del meta["config"]["data"]["noise_estimator"]  # as such a checkpoint was written
    old = save_checkpoint(tmp_path / "old", meta, state)
    runs = {name: client.get_run(add_search(client, uri, experiment, name, checkpoint))
            for name, checkpoint in (("old", old), ("new", generators["good"]))}
    search_run = client.get_run(runs["new"].data.tags[PARENT_TAG])
    cases_for: dict = {}
    for run in runs.values():
        promote.held_out_score(run.data.tags[MODEL_URI_TAG], search_run, uri, cases_for)
    sigmas = {key[1]: [case.sigma for case in cases] for key, cases in cases_for.items()}
    assert set(sigmas) == {"haar", "two_band"}
    assert all(new < old for new, old in zip(sigmas["two_band"], sigmas["haar"]))


def test_an_unknown_search_is_a_one_line_error(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # never the registry an earlier test set for the process
    ensure_experiment(client, uri, EXPERIMENT)
    assert promote.main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--search", "nope"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "mlflow.store.db" not in line]  # MLflow's own set-up
    assert err == ["error: no search named 'nope'"]
