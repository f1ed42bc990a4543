"""A search on a two-node Ray cluster, the driver joining it through RAY_ADDRESS as on a real one.

Each node has 1 CPU and a trial's two DDP workers need 0.89 CPU each, so Ray must place them on
different nodes; results and checkpoints go to one storage path that both nodes use.
"""

import os
import socket
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from hpo.runtime import PROJECT_ROOT
from hpo.ray_runtime import RAY_ENV
from hpo.tracking import PARENT_TAG, SEARCH_TAG
from tests.conftest import ANATOMICAL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_port": free_port(),
                        "object_store_memory": 200 * 2**20, "resources": {"head": 1}},
    )
    cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20, resources={"second": 1})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ddp_workers_of_a_trial_run_on_different_nodes(two_nodes, tmp_path):
    shared = tmp_path / "shared"  # on a real cluster: s3:// or a shared filesystem
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **RAY_ENV, "RAY_ADDRESS": two_nodes.address}
    args = ["--fast", "--trials", "2", "--workers-per-trial", "2", "--max-concurrent", "1", "--name", "multi",
            "--refit-minutes", "0",
            "--storage", str(shared), "--tracking-uri", db, "--data", str(ANATOMICAL)]
    done = subprocess.run([sys.executable, "hpo/search.py", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 worker(s) x 0.89 CPU" in done.stdout  # planned from both nodes' CPUs

    workers = list_actors(address=two_nodes.address, filters=[("class_name", "=", "RayTrainWorker")], detail=True)
    nodes = {node.node_id for node in two_nodes.list_all_nodes()}
    assert len(workers) >= 4  # two trials of two workers
    assert {w.node_id for w in workers} == nodes

    checkpoints = [c for c in shared.glob("multi-train/train-*/checkpoint_*") if c.is_dir()]
    assert checkpoints and all((c / "state.pt").is_file() for c in checkpoints)
    client = MlflowClient(db)
    experiment = client.get_experiment_by_name("mri-sr-search")
    parent = client.search_runs([experiment.experiment_id], f"tags.`{SEARCH_TAG}` = 'multi'")[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
