"""Promote the best generator of an experiment: `python hpo/promote.py [--experiment NAME]`.

Registers the generator of the child run with the highest `val/psnr` (or `--run-id`) as a version
of a registered model (default `mri-sr-generator`) and points the alias `champion` at it. Running
it again is safe: a run already registered keeps its version.
"""

import argparse
import sys

import mlflow
from mlflow.tracking import MlflowClient

from hpo.tracking import DEFAULT_EXPERIMENT, MODEL_URI_TAG, PARENT_TAG, tracking_uri
from hpo.validation import METRIC

DEFAULT_MODEL_NAME = "mri-sr-generator"
DEFAULT_ALIAS = "champion"


def best_run(client: MlflowClient, experiment: str, run_id: str | None = None):
    if run_id is not None:
        run = client.get_run(run_id)
        if MODEL_URI_TAG not in run.data.tags:
            raise LookupError(f"run {run_id} has no logged generator")
        return run
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{MODEL_URI_TAG}` != '' and tags.`{PARENT_TAG}` != ''",
        order_by=[f"metrics.`{METRIC}` DESC"],
        max_results=1,
    )
    if not runs:
        raise LookupError(f"experiment {experiment!r} has no trial with a logged generator yet")
    return runs[0]


def promote(client: MlflowClient, run, name: str, alias: str) -> tuple[str, str]:
    """(version, models:/ URI); registers the run's generator unless it is already a version."""
    existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run.info.run_id]
    if existing:
        version = existing[0].version
    else:
        version = mlflow.register_model(run.data.tags[MODEL_URI_TAG], name).version
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, METRIC, str(run.data.metrics.get(METRIC)))
    return str(version), f"models:/{name}@{alias}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment of the search")
    parser.add_argument("--run-id", help="promote this child run instead of the best one")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="registered model name")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help="alias to point at the new version")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the project's store)")
    args = parser.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri)
    try:
        run = best_run(client, args.experiment, args.run_id)
    except (LookupError, mlflow.exceptions.MlflowException) as err:
        print(f"error: {err}".splitlines()[0], file=sys.stderr)
        return 2
    version, model_uri = promote(client, run, args.name, args.alias)
    print(f"promoted run {run.info.run_id} ({METRIC} {run.data.metrics.get(METRIC, float('nan')):.2f} dB) "
          f"as {args.name} version {version}: {model_uri}")
    print(f"use it: python hpo/superresolve.py IN.nii.gz OUT.nii.gz --model {model_uri}"
          + (f" --tracking-uri {args.tracking_uri}" if args.tracking_uri else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
