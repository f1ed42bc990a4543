"""A trial's Ray Train run survives losing a worker: Train restarts it from its last checkpoint."""

import os
import signal
import threading
import time

import pytest
import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.state import list_actors

from data_pipeline.dataset import make_pair, plan_split
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import read_volume
from data_pipeline.ray_data import PatchSpec, patch_stream
from hpo.config import SMOKE, Config
from hpo.trial import worker_loop
from hpo.validation import make_cases


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, tmp_path, anatomical):
    config = Config().override(SMOKE | {"train.max_steps": 400, "train.eval_every": 20})
    data = config.data
    train_items, val_items = plan_split([str(anatomical)])
    cases = make_cases([make_pair(read_volume(anatomical), "validation", "gaussian", 2, IntensityNorm())], 2)
    stream = patch_stream(
        train_items, PatchSpec(data.degradation, 2, data.patch_size, data.foreground_fraction, data.intensity_percentile),
        total_patches=900, seed=0,
    )
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"config": config.to_dict(), "val_cases": ray.put(cases), "cpus_per_worker": 0.8},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.8}),
        run_config=RunConfig(name="kill", storage_path=str(tmp_path), failure_config=FailureConfig(max_failures=2)),
        datasets={"train": stream},
    )
    results = []
    fit = threading.Thread(target=lambda: results.append(trainer.fit()))
    fit.start()
    deadline = time.time() + 300
    # A second checkpoint folder means the first one has been written and registered.
    while time.time() < deadline and len(list((tmp_path / "kill").glob("checkpoint_*"))) < 2:
        time.sleep(0.2)
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    assert len(workers) == 2, "training ended before a worker could be killed"
    os.kill(workers[-1].pid, signal.SIGKILL)
    fit.join(timeout=400)
    result = results[0]
    assert result.error is None
    assert result.metrics["step"] == 400
    assert result.metrics["resumed_from_step"] >= 20  # restarted from a checkpoint, not from scratch
    assert result.metrics["resumed_from_step"] % 20 == 0
