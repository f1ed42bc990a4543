"""One search trial: the unchanged training loop in Ray Train DDP workers, driven from a Tune function.

Ray 2.60 runs Train inside Tune as a function trainable (the "driver") that builds a TorchTrainer
and calls `fit()`; `TuneReportCallback` forwards rank 0's metrics and checkpoint path to Tune
(../shared/RAY_NOTES.md). Ray-specific lines are marked `# Ray:`.
"""

import contextlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.tune.integration.ray_train import TuneReportCallback

from data_pipeline.dataset import SplitItem
from data_pipeline.degrade import get_degradation
from data_pipeline.ray_data import PatchSpec, patch_stream
from hpo.config import Config
from hpo.runtime import set_threads

# The driver of every trial is a fresh process that imports this module: it stays light (no MONAI,
# matplotlib or MLflow, seconds of CPU per trial). What only the workers need is imported in
# `worker_loop`.


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares and the search never changes: data, resources, storage."""

    base_config: dict[str, Any]  # Config.to_dict(); each trial overrides the searched keys
    train_items: list[SplitItem]
    val_cases: ray.ObjectRef  # list[hpo.validation.ValidationCase], put once by the search
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    data_tasks: int  # Ray Data patch tasks at once
    storage_path: str
    max_failures: int = 2

    def trial_config(self, params: dict[str, Any]) -> Config:
        return Config.from_dict(self.base_config).override(params)


def _agree_max(device: torch.device):
    def agree(value: float) -> float:
        if not dist.is_initialized():
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    return agree


def _endless_batches(shard, batch_size: int):
    # Equal shards (Ray Train's default split) end at the same step on every rank, so a new pass
    # starts on all ranks together; the stream is sized so that this is rare.
    while True:
        for batch in shard.iter_torch_batches(batch_size=batch_size, drop_last=True, dtypes=torch.float32):
            yield batch["lr"], batch["hr"]  # (B, 1, p, p, p), (B, 1, sp, sp, sp)


def worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: the same `hpo.loop.train` that `hpo/train.py` runs."""
    from hpo.loop import Runtime, autocast_dtype, train
    from hpo.preview import PREVIEW_FILE, save_preview
    from hpo.validation import Validator

    config = Config.from_dict(loop_config["config"])
    context = ray.train.get_context()  # Ray:
    rank, world = context.get_world_rank(), context.get_world_size()
    set_threads(loop_config["cpus_per_worker"])
    device = ray.train.torch.get_device()  # Ray: cuda:<local rank> on GPU workers
    data = config.data
    grid = get_degradation(data.degradation).grid
    shard = ray.train.get_dataset_shard("train")  # Ray:
    batches = _endless_batches(shard, max(1, data.batch_size // world))

    validator = None
    if rank == 0:  # rank 0 alone evaluates, draws and checkpoints
        amp = autocast_dtype(config, device)
        cases = ray.get(loop_config["val_cases"])  # Ray: an object reference, fetched where it is used
        validator = Validator(cases, data.scale_factor, grid, device, autocast_dtype=amp)

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        checkpoint = None
        if checkpoint_dir is not None:
            if validator is not None and validator.last_sr is not None:
                case, s = validator.cases[0], data.scale_factor
                lr_region = case.lr[tuple(slice(c.start // s, c.stop // s) for c in case.crop)]
                save_preview(
                    checkpoint_dir / PREVIEW_FILE,
                    lr_region / case.hr_max,
                    validator.last_sr / case.hr_max,
                    case.hr,
                    f"step {int(metrics['step'])}: val/psnr {metrics.get('val/psnr', float('nan')):.2f} dB",
                )
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)  # Ray:
        ray.train.report(metrics, checkpoint=checkpoint)  # Ray: every rank reports; rank 0 attaches

    runtime = Runtime(
        device=device,
        is_main=rank == 0,
        prepare_model=ray.train.torch.prepare_model,  # Ray: device + DDP
        agree=_agree_max(device),
    )
    resume = ray.train.get_checkpoint()  # Ray: set when this run restarts after a failure or a pause
    with resume.as_directory() if resume else contextlib.nullcontext() as resume_dir:
        train(config, batches, validator, report, runtime, resume_from=Path(resume_dir) if resume_dir else None)


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """The Tune function trainable: one TorchTrainer run per trial, named after the trial."""
    trial_id = tune.get_context().get_trial_id()  # Ray:
    ray.data.DataContext.get_current().enable_progress_bars = False  # Ray: Tune's table is the progress
    config = setup.trial_config(params)
    data = config.data
    total_patches = int(1.1 * config.train.max_steps * data.batch_size) + data.batch_size * setup.workers
    stream = patch_stream(
        setup.train_items,
        PatchSpec(data.degradation, data.scale_factor, data.patch_size, data.foreground_fraction, data.intensity_percentile),
        total_patches=total_patches,
        seed=config.train.seed + zlib.crc32(trial_id.encode()) % 10_000,
        max_tasks=setup.data_tasks,
    )
    resources = {"CPU": setup.cpus_per_worker}
    if setup.gpus_per_worker:
        resources["GPU"] = setup.gpus_per_worker
    trainer = ray.train.torch.TorchTrainer(  # Ray:
        worker_loop,
        train_loop_config={
            "config": config.to_dict(),
            "val_cases": setup.val_cases,
            "cpus_per_worker": setup.cpus_per_worker,
        },
        scaling_config=ScalingConfig(
            num_workers=setup.workers, use_gpu=setup.gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=f"train-{trial_id}",  # stable: a resumed trial finds its checkpoints by this name
            storage_path=setup.storage_path,
            failure_config=FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
        datasets={"train": stream},
    )
    trainer.fit()


