"""One search trial: the unchanged training loop, fed by the trial's Ray Data patch stream.

Two kinds of trial run the same `hpo.loop.train`:
- one worker: the loop runs inside the Tune trial's own process, which holds the worker's CPUs
  (and GPU); Tune's checkpoints restore it after a failure;
- several workers: the Tune trial drives a Ray Train `TorchTrainer` of DDP workers; Train's
  checkpoints restore the run after a lost worker, and `TuneReportCallback` forwards rank 0's
  metrics to Tune (docs/ray.md).
Why two: a TorchTrainer starts eight processes per trial (controller, worker, placement-group
cleaner, synchronisation and dataset actors...), tens of CPU-seconds before the first step,
which is most of a trial that ASHA stops after 25 steps. One GPU per trial is the best use of
GPUs for these models, so most trials are one-worker trials. Ray-specific lines are marked `# Ray:`.
"""

import time

_LOADED_AT = time.time()  # before the imports below: a new trial process spends seconds on them

import contextlib  # noqa: E402
import logging  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable, Generator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import ray.data  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402

from data_pipeline.dataset import SplitItem  # noqa: E402
from data_pipeline.degrade import get_degradation  # noqa: E402
from data_pipeline.ray_data import patch_stream  # noqa: E402
from data_pipeline.trial_stream import ddp_chunks, endless_batches, trial_batches  # noqa: E402
from hpo.config import Config  # noqa: E402
from hpo.names import DATA_WAIT, FIRST_BATCH, STARTUP  # noqa: E402
from hpo.resources import DRIVER_CPUS  # noqa: E402
from hpo.runtime import set_threads  # noqa: E402
from hpo.search_space import TRIAL_INDEX  # noqa: E402

# The trial process imports this module: it stays light (no MONAI, matplotlib, MLflow or Ray
# Train, seconds of CPU per process). What only training needs is imported where it is used.

DIVERGED = "diverged"  # 1.0 in the last result of a trial whose loss became non-finite
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
    storage_path: str  # where several-worker trials keep their Ray Train runs
    max_failures: int = 2
    local_steps: int = 0  # a one-worker trial's first steps, on patches it cuts itself (see LEAD_STEPS)

    def trial_config(self, params: dict[str, Any]) -> Config:
        return Config.from_dict(self.base_config).override({k: v for k, v in params.items() if k != TRIAL_INDEX})

    def tune_resources(self) -> dict[str, float]:
        """What Tune reserves for the trial process: the worker itself, or a driver that only waits."""
        if self.workers > 1:
            return {"CPU": DRIVER_CPUS}
        resources = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            resources["GPU"] = self.gpus_per_worker
        return resources


# Ray: Train's and Tune's storage log a line at every checkpoint; the search reports each evaluation
# itself (progress lines and MLflow), so these lines only repeat it, hundreds of times a search.
_CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")


def _quiet_checkpoint_logs() -> None:
    for name in _CHECKPOINT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Ray Data announces every dataset's start and plan on the console, one trial's stream at a
    # time, between Tune's tables; its log files under the session's logs/ray-data keep them.
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.WARNING)


def stream_seed(seed: int, index: int) -> int:
    """The patch stream of trial `index`: the same in every search with the same --seed, and after a resume."""
    return seed * 100_003 + index


def checkpoint_path(metrics: dict[str, Any], trial_fs_path: str) -> str | None:
    """Where the checkpoint reported with `metrics` lives in the search's storage, if one was."""
    if metrics.get("checkpoint_path"):  # Ray Train's, forwarded by TuneReportCallback
        return metrics["checkpoint_path"]
    if metrics.get("checkpoint_dir_name"):  # Tune's own, inside the trial's folder
        return f"{trial_fs_path}/{metrics['checkpoint_dir_name']}"
    return None


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """The Tune function trainable: the loop right here (one worker) or in a TorchTrainer (several)."""
    origin = _started_at()
    _quiet_checkpoint_logs()
    index = params.get(TRIAL_INDEX)
    if index is None:  # a search started before trials were numbered
        index = zlib.crc32(tune.get_context().get_trial_id().encode()) % 10_000  # Ray:
    config = setup.trial_config(params)
    context = ray.data.DataContext.get_current()  # Ray:
    context.enable_progress_bars = False  # Tune's table is the progress
    context.execution_options.preserve_order = True  # the same seed gives the same batches in the same order
    seed = stream_seed(config.train.seed, int(index))
    if setup.workers == 1:
        _train_in_trial(config, seed, setup, origin)
    else:
        chunks = ddp_chunks(setup.train_items, config.train.max_steps, config.data.batch_size, setup.workers, seed)
        _train_with_ray_train(config, patch_stream(chunks, config.patch_spec(), setup.data_tasks), setup, origin)


_trials_in_process = 0


def _started_at() -> float:
    """When this trial's start-up began: when its process loaded this module, or now in a process Tune reuses."""
    global _trials_in_process
    _trials_in_process += 1
    return _LOADED_AT if _trials_in_process == 1 else time.time()


def _train_in_trial(config: Config, seed: int, setup: TrialSetup, origin: float) -> None:
    from hpo.loop import Runtime

    set_threads(setup.cpus_per_worker)
    # Ray: Tune gives this process the trial's GPU (CUDA_VISIBLE_DEVICES), so it is device 0.
    device = torch.device("cuda" if setup.gpus_per_worker else "cpu")
    data = config.data
    batches = trial_batches(setup.train_items, seed, config.patch_spec(), setup.data_tasks, data.batch_size,
                            config.train.max_steps, setup.local_steps)
    run_loop(
        config,
        batches,
        Runtime(device=device),
        setup.val_cases,
        report=tune.report,  # Ray:
        make_checkpoint=tune.Checkpoint.from_directory,  # Ray:
        resume=tune.get_checkpoint(),  # Ray: set when Tune restarts this trial after a failure
        origin=origin,
    )


def _train_with_ray_train(config: Config, stream: ray.data.Dataset, setup: TrialSetup, origin: float) -> None:
    import ray.train
    import ray.train.torch
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = {"CPU": setup.cpus_per_worker}
    if setup.gpus_per_worker:
        resources["GPU"] = setup.gpus_per_worker
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True
    trainer = ray.train.torch.TorchTrainer(  # Ray:
        worker_loop,
        train_loop_config={
            "config": config.to_dict(),
            "val_cases": setup.val_cases,
            "cpus_per_worker": setup.cpus_per_worker,
            "origin": origin,
        },
        scaling_config=ScalingConfig(
            num_workers=setup.workers, use_gpu=setup.gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            # stable: a resumed trial finds its checkpoints by this name
            name=f"train-{tune.get_context().get_trial_id()}",
            storage_path=setup.storage_path,
            failure_config=FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
        datasets={"train": stream},
        dataset_config=DataConfig(execution_options=ingest),
    )
    trainer.fit()


def worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker of a several-worker trial."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from hpo.loop import Runtime

    _quiet_checkpoint_logs()
    config = Config.from_dict(loop_config["config"])
    context = ray.train.get_context()  # Ray:
    rank, world = context.get_world_rank(), context.get_world_size()
    set_threads(loop_config["cpus_per_worker"])
    device = ray.train.torch.get_device()  # Ray: cuda:<local rank> on GPU workers

    def agree_max(value: float) -> float:
        if not dist.is_initialized():
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def any_rank(flag: bool) -> bool:
        return agree_max(float(flag)) > 0

    shard = ray.train.get_dataset_shard("train")  # Ray:
    run_loop(
        config,
        endless_batches(shard, max(1, config.data.batch_size // world)),
        Runtime(device=device, is_main=rank == 0, prepare_model=ray.train.torch.prepare_model, agree=agree_max,
                any_rank=any_rank),
        loop_config["val_cases"],
        report=ray.train.report,  # Ray: every rank reports; rank 0 attaches the checkpoint
        make_checkpoint=ray.train.Checkpoint.from_directory,  # Ray:
        resume=ray.train.get_checkpoint(),  # Ray: set when this run restarts after a lost worker
        origin=loop_config.get("origin", time.time()),
    )


def run_loop(
    config: Config,
    batches: Generator[tuple[torch.Tensor, torch.Tensor], None, None],
    runtime,
    val_cases: ray.ObjectRef,
    report: Callable[..., None],
    make_checkpoint: Callable[[str], Any],
    resume,
    origin: float,
) -> None:
    """`hpo.loop.train` with Ray's report and checkpoint in place of a plain run's; both trial kinds use it.

    Rank 0 evaluates, draws a preview and attaches the checkpoint. Every report carries
    `time/startup_s` (from the trial's start to its first step). A non-finite loss ends the trial at
    once: one last result with `diverged` = 1 and no `val/psnr` worth keeping, no checkpoint, no
    retry (a retry from the last checkpoint would diverge again).
    """
    from hpo.loop import Diverged, autocast_dtype, train
    from hpo.preview import PREVIEW_FILE, save_preview
    from hpo.validation import METRIC, Validator

    data = config.data
    validator = None
    if runtime.is_main:
        cases = ray.get(val_cases)  # Ray: an object reference, fetched where it is used
        grid = get_degradation(data.degradation).grid
        validator = Validator(cases, data.scale_factor, grid, runtime.device, autocast_dtype(config, runtime.device))

    first_step: list[float] = []
    waited = {"first": 0.0, "total": 0.0}

    def timed(source):
        # How long the loop waits for its patches: on a GPU, the sign that it needs more data CPUs.
        try:
            while True:
                start = time.perf_counter()
                batch = next(source)
                wait = time.perf_counter() - start
                waited["total"] += wait
                if not first_step:
                    first_step.append(time.time())
                    waited["first"] = wait
                yield batch
        finally:
            source.close()

    def with_startup(metrics: dict[str, float]) -> dict[str, float]:
        return {**metrics, STARTUP: (first_step[0] if first_step else time.time()) - origin,
                FIRST_BATCH: waited["first"], DATA_WAIT: waited["total"]}

    def report_evaluation(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        checkpoint = None
        if checkpoint_dir is not None:
            if validator is not None and validator.last_sr is not None:
                case, factors = validator.cases[0], data.factors
                lr_region = case.lr[tuple(slice(c.start // f, c.stop // f) for c, f in zip(case.crop, factors))]
                save_preview(
                    checkpoint_dir / PREVIEW_FILE,
                    lr_region / case.hr_max,
                    validator.last_sr / case.hr_max,
                    case.hr,
                    f"step {int(metrics['step'])}: {METRIC} {metrics.get(METRIC, float('nan')):.2f} dB",
                )
            checkpoint = make_checkpoint(str(checkpoint_dir))
        report(with_startup(metrics), checkpoint=checkpoint)

    stream = timed(batches)
    with resume.as_directory() if resume else contextlib.nullcontext() as resume_dir:
        try:
            train(config, stream, validator, report_evaluation, runtime,
                  resume_from=Path(resume_dir) if resume_dir else None)
        except Diverged as err:
            report(with_startup({"step": err.step, METRIC: float("nan"), DIVERGED: 1.0}))
        finally:
            stream.close()  # and with it the Ray Data stream under it
