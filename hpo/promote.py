"""Promote a search's best generator if it beats the champion: `python hpo/promote.py [--search NAME]`.

Takes the best generator of one search (`--search NAME`; by default the latest search of the
experiment; or `--run-id`): its refit run that scored best on the whole held-out regions, or, in a
search without refit, the trial with the highest `val/psnr`. It registers that generator as a
version of a registered model (default `mri-sr-generator`; a run already registered keeps its
version), scores it and the current `@champion` on the same data: the whole held-out regions of that
search's data, rebuilt here as the search split them. The alias moves only when the challenger
scores higher (`--force` moves it regardless). Both scores go on the new version (tags and
description). Running it again changes nothing.
"""

import argparse
import json
import sys

import mlflow
from mlflow.tracking import MlflowClient

from data_pipeline.acquisition import Acquisition
from data_pipeline.nifti import VolumeError
from hpo.config import Config
from hpo.superresolve import load_model
from hpo.runtime import tracking_uri
from hpo.tracking import (
    DATA_PARAM, DEFAULT_EXPERIMENT, HELDOUT_PREFIX, MODEL_URI_TAG, PARENT_TAG, REFIT_TAG, SEARCH_TAG, recorded_settings,
)
from hpo.validation import METRIC, Validator, held_out_cases

DEFAULT_MODEL_NAME = "mri-sr-generator"
DEFAULT_ALIAS = "champion"
SCORE_TAG = "mri_sr.heldout_psnr"  # on a version: its PSNR in brain on the held-out regions it was judged on
JUDGED_ON_TAG = "mri_sr.judged_on"  # on a version: which search's held-out regions


def find_search(client: MlflowClient, experiment_id: str, search: str | None):
    """The parent run of search `search`, or the latest search of the experiment."""
    query = f"tags.`{SEARCH_TAG}` = '{search}'" if search else f"tags.`{SEARCH_TAG}` != ''"
    found = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        raise LookupError(f"no search named {search!r}" if search else "no search in this experiment yet")
    return found[0]


def best_run(client: MlflowClient, experiment_id: str, parent_run_id: str):
    """The search's refit run that scored best on the whole held-out regions; without refits, its best trial."""
    children = f"tags.`{MODEL_URI_TAG}` != '' and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    refits = client.search_runs(
        [experiment_id], f"{children} and tags.`{REFIT_TAG}` != '' and metrics.`{HELDOUT_PREFIX}{METRIC}` > 0",
        order_by=[f"metrics.`{HELDOUT_PREFIX}{METRIC}` DESC"], max_results=1,
    )
    if refits:
        return refits[0]
    runs = client.search_runs([experiment_id], children, order_by=[f"metrics.`{METRIC}` DESC"], max_results=1)
    if not runs:
        raise LookupError("the search has no trial with a logged generator yet")
    return runs[0]


def register(client: MlflowClient, run, name: str) -> str:
    """The run's generator as a version of `name`: the existing one, or a new one."""
    existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run.info.run_id]
    if existing:
        return str(existing[0].version)
    return str(mlflow.register_model(run.data.tags[MODEL_URI_TAG], name).version)


def held_out_score(uri: str, search_run, tracking: str, cases_for: dict) -> tuple[float, dict, Acquisition]:
    """PSNR in brain of the model at `uri` on the whole held-out regions of `search_run`'s data, made
    with the model's own acquisition model (with its fixed validation noise); and that acquisition."""
    generator, meta = load_model(uri, tracking)
    config = Config.from_dict(meta["config"])
    acquisition = config.data.acquisition()
    # The estimator sets the cases' noise map: a model trained on another reads other maps.
    key = (acquisition.key(), acquisition.noise_estimator, config.data.intensity_percentile, config.data.patch_size)
    if key not in cases_for:
        settings = recorded_settings(MlflowClient(tracking_uri(tracking)), search_run.info.run_id)
        data = (settings["data"] if settings else json.loads(search_run.data.params.get(DATA_PARAM, "[]"))) or None
        cases_for[key] = held_out_cases(data, acquisition, config.data.intensity_percentile,
                                        config.patch_spec().min_shape)
    scores = Validator(cases_for[key], acquisition.scale_factor, acquisition.grid)(generator)
    return scores[METRIC], meta, acquisition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment of the search")
    parser.add_argument("--search", help="the search (its --name) whose best trial challenges (default: the latest)")
    parser.add_argument("--run-id", help="challenge with this child run instead of the search's best")
    parser.add_argument("--force", action="store_true", help="move the alias even if the challenger scores lower")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="registered model name")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help="alias to point at the winner")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the project's store)")
    args = parser.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri)
    try:
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise LookupError(f"no MLflow experiment named {args.experiment!r}")
        if args.run_id:
            run = client.get_run(args.run_id)
            if MODEL_URI_TAG not in run.data.tags:
                raise LookupError(f"run {args.run_id} has no logged generator")
            search_run = client.get_run(run.data.tags[PARENT_TAG])
        else:
            search_run = find_search(client, experiment.experiment_id, args.search)
            run = best_run(client, experiment.experiment_id, search_run.info.run_id)
        version = register(client, run, args.name)
        try:
            champion = client.get_model_version_by_alias(args.name, args.alias)
        except mlflow.exceptions.MlflowException:
            champion = None
        search_name = search_run.data.tags.get(SEARCH_TAG, search_run.info.run_id)
        model_uri = f"models:/{args.name}@{args.alias}"
        if champion is not None and str(champion.version) == version:
            print(f"{args.name} version {version} (run {run.info.run_id}) is already {model_uri}; nothing to do")
            return 0
        cases: dict = {}
        score, meta, acquisition = held_out_score(f"models:/{args.name}/{version}", search_run, args.tracking_uri, cases)
        verdict, promote = f"no {args.alias} yet", True
        description = f"{METRIC} {score:.2f} dB in brain on the whole held-out regions of search {search_name}"
        if champion is not None:
            incumbent, _, incumbent_acquisition = held_out_score(
                f"models:/{args.name}/{champion.version}", search_run, args.tracking_uri, cases)
            # Scores on different inputs say nothing about which model is better (cubic B-spline alone
            # scores 3 dB higher on kspace input than on gaussian).
            comparable = incumbent_acquisition.key() == acquisition.key()
            promote = args.force or (comparable and score > incumbent)
            verdict = f"{args.alias} version {champion.version}: {incumbent:.2f} dB" + ("" if comparable else
                      f" on {incumbent_acquisition.describe()}, this one on {acquisition.describe()}: not comparable")
            description += f"; against {verdict}"
    except (LookupError, VolumeError, FileNotFoundError, mlflow.exceptions.MlflowException) as err:
        print(f"error: {err}".splitlines()[0], file=sys.stderr)
        return 2
    client.set_model_version_tag(args.name, version, SCORE_TAG, f"{score:.4f}")
    client.set_model_version_tag(args.name, version, JUDGED_ON_TAG, search_name)
    client.set_model_version_tag(args.name, version, METRIC, str(run.data.metrics.get(METRIC)))
    client.update_model_version(args.name, version, description=description)
    if not promote:
        print(f"kept {model_uri}: the challenger, version {version} of run {run.info.run_id}, scored {score:.2f} dB "
              f"in brain on search {search_name}'s held-out regions against {verdict}; --force promotes it anyway")
        return 0
    client.set_registered_model_alias(args.name, args.alias, version)
    print(f"promoted run {run.info.run_id} as {args.name} version {version}: {model_uri} "
          f"({score:.2f} dB in brain on search {search_name}'s held-out regions; {verdict}"
          + ("; forced" if args.force and champion is not None else "") + ")")
    print(f"use it: python hpo/superresolve.py IN.nii.gz OUT.nii.gz --model {model_uri}"
          + (f" --tracking-uri {args.tracking_uri}" if args.tracking_uri else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
