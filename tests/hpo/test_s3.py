"""The search on object storage, end to end, against an S3-compatible server on loopback (moto):
volumes read from `--data s3://...` by Ray Data (a corrupt object reported, skipped and counted),
Tune's and the trials' checkpoints written to `--storage s3://...`, a killed search resumed from
there, and MLflow's artifacts in S3 through a tracking server with the endpoint override."""

import gzip
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from mlflow.tracking import MlflowClient

from hpo.runtime import PROJECT_ROOT
from hpo.tracking import DEFAULT_EXPERIMENT, MODEL_URI_TAG, PARENT_TAG, SEARCH_TAG, TRIAL_TAG
from tests.conftest import aws_client, free_port, wait_until_answered

pytestmark = pytest.mark.slow


@pytest.fixture
def bucket(aws_server, anatomical) -> str:
    """A bucket holding two real volumes and one corrupt object under data/."""
    name = f"mri-sr-{uuid.uuid4().hex[:12]}"
    s3 = aws_client(aws_server, "s3")
    s3.create_bucket(Bucket=name)
    content = anatomical.read_bytes()
    s3.put_object(Bucket=name, Key="data/a.nii", Body=content)
    s3.put_object(Bucket=name, Key="data/site2/b.nii.gz", Body=gzip.compress(content))
    s3.put_object(Bucket=name, Key="data/site2/broken.nii.gz", Body=gzip.compress(content)[:5000])  # cut short
    return name


@pytest.fixture
def mlflow_server(aws_server, bucket, tmp_path):
    """An MLflow tracking server whose artifacts go to the bucket (MLFLOW_S3_ENDPOINT_URL)."""
    port = free_port()
    env = {**os.environ, **aws_server}
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", f"s3://{bucket}/mlflow",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    wait_until_answered(f"{uri}/health", server, 120)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def children(uri: str, name: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    if experiment is None:
        return []
    parents = client.search_runs([experiment.experiment_id], f"tags.`{SEARCH_TAG}` = '{name}'")
    if not parents:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{parents[0].info.run_id}'")


@pytest.mark.timeout(900)
def test_a_search_on_s3_reads_volumes_checkpoints_and_resumes_there(ray_cluster, aws_server, bucket, mlflow_server):
    args = ["hpo/search.py", "--fast", "--trials", "3", "--max-concurrent", "1", "--name", "s3", "--refit-minutes", "0",
            "--data", f"s3://{bucket}/data/", "--storage", f"s3://{bucket}/ray", "--tracking-uri", mlflow_server]
    # Only what a user of an S3-compatible store sets: its endpoint and keys.
    env = {**os.environ, **aws_server, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    env.pop("MLFLOW_S3_ENDPOINT_URL")  # the server writes the artifacts, not the search
    driver = subprocess.Popen([sys.executable, *args], cwd=PROJECT_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not [c for c in children(mlflow_server, "s3") if c.info.status == "FINISHED"]:
            time.sleep(1)
        driver.send_signal(signal.SIGKILL)  # the driver dies mid-search
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    finished_before = {c.data.tags[TRIAL_TAG] for c in children(mlflow_server, "s3") if c.info.status == "FINISHED"}
    assert finished_before, "no trial finished before the deadline"

    resumed = subprocess.run([sys.executable, *args, "--resume"], cwd=PROJECT_ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    # The corrupt object is named and skipped; the two good volumes train and validate.
    assert f"s3://{bucket}/data/site2/broken.nii.gz" in resumed.stdout
    assert "skipped 1 unusable volume(s)" in resumed.stdout

    runs = children(mlflow_server, "s3")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs), resumed.stdout[-6000:]
    assert finished_before <= {r.data.tags[TRIAL_TAG] for r in runs}

    s3 = aws_client(aws_server, "s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    # Tune's experiment state and every trial's checkpoints, in the bucket.
    assert any(k.startswith("ray/s3/experiment_state") for k in keys)
    folders = {k.split("/checkpoint_")[0] for k in keys if k.startswith("ray/s3/") and "/checkpoint_" in k}
    # (A trial the kill caught before Tune saved its state runs again as a new trial after the resume:
    # its first folder may stay behind, so the folders of the three recorded trials are what counts.)
    for trial_id in {r.data.tags[TRIAL_TAG] for r in runs}:
        assert any(f"/run_trial_{trial_id}_" in folder for folder in folders), (trial_id, folders)
    # MLflow's artifacts (each trial's generator as a model) went to S3 through the server. (The same
    # kill may leave the generator of a lost trial's deleted run there too: the recorded runs' count.)
    models = [k for k in keys if k.startswith("mlflow/") and k.endswith("/MLmodel")]
    for run in runs:
        model_id = run.data.tags[MODEL_URI_TAG].rsplit("/", 1)[-1]
        assert sum(f"/{model_id}/" in k for k in models) == 1, (model_id, models)
