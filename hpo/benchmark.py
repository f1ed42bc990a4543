"""Benchmark: what Ray costs a search, and how fast Ray Data cuts patches. `python hpo/benchmark.py`.

Measured in one run, on the same machine, printed as ratios against a baseline:

1. Search overhead. The other side is `hpo/search.py` itself, run first. The baseline is what one
   would write without Ray, doing the same work: an Optuna study (seeded TPE sampler) in as many
   worker processes as the search runs trials at once, with the same threads each, the same
   training function (`hpo.loop.train`), the same validation blocks and the same patches
   (`data_pipeline.dataset.chunk_batches` cuts what the search's Ray Data stream of that trial
   holds). It replays the search's trials: the same configurations in the same order (enqueued),
   each stopped by its pruner where the search's ASHA stopped it. ASHA is asynchronous: which
   trials it stops depends on which reach a rung first, so an independent baseline with the same
   rule trained other trials for other steps (1,375 against 2,050 steps in one run, 1.77x raw for
   1.19x per step) and the ratio measured luck. Training is deterministic here, so both sides
   reach the same `val/psnr` in every trial: the report counts them, the proof of equal work.
   Printed: the wall-time ratio, the training steps each side ran, each trial's start-up (from its
   start to its first training step) and the CPU-seconds per trial of every process other than the
   trials' (the driver; on the Ray side also Ray's services and its data workers). The pair
   runs `--pairs` times (2) and the ratio pools them: a shared machine's speed drifts by a third
   within minutes, and the training loop's milliseconds per step on each side show how much.
2. Patch production. Ray Data's patch stream pulled as fast as it goes with its tasks on one CPU
   core, against the same chunks cut in this process (the pure function alone): patch pairs per
   second per data core.
3. The device (`--only device`, `make bench-gpu`): a training step of the default model in fp32 and
   with bf16 autocast, the patches it consumes against what one data core produces (so: how many
   data CPUs a trainer needs to stay under a third of production), whole-volume super-resolution of
   a 180 x 216 x 180 output with `hpo/superresolve.py`, a Ray Train run of the several-worker
   trial's loop on the device's collective backend (NCCL on a GPU), and the device's utilisation
   sampled during a 2-trial search. On a GPU machine it measures the GPU; elsewhere the same code
   runs on the CPU (`--fast` shrinks it to a smoke test, which CI runs).
"""

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import optuna
import psutil

from data_pipeline.dataset import chunk_batches, cut_chunk, make_pair, plan_chunks, plan_split, resolve_inputs
from data_pipeline.degrade import get_degradation
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import read_volume
from hpo.config import Config
from hpo.resources import TrialResources, plan_resources
from hpo.runtime import set_threads
from hpo.search_space import search_space, searched_keys
from hpo.trial import stream_seed
from hpo.validation import METRIC, Validator, make_block_cases


@dataclass
class Side:
    """What one way of running the search measured."""

    wall_s: float = 0.0
    trials: int = 0
    steps: int = 0  # training steps over all trials
    train_s: float = 0.0  # training-loop wall time over all trials (evaluations included)
    cpu_s: float = 0.0  # CPU time of every process of the run
    trials_cpu_s: float = 0.0  # of those, the trials' processes (training, validation, patches cut there)
    outside_cpu_s: dict[str, float] = field(default_factory=dict)  # the rest, by process name
    startup_s: list[float] = field(default_factory=list)
    best: float = float("nan")
    per_trial: list[dict] = field(default_factory=list)  # index, steps, loop seconds, value, config

    def outside_trials_cpu_s(self) -> float:
        """Per trial, the CPU time of every other process: the driver, Ray's services, data workers."""
        return (self.cpu_s - self.trials_cpu_s) / max(1, self.trials)


class CpuMeter:
    """CPU seconds of this process and all its descendants, sampled so that processes that end count too.

    `is_trial(command_line)` tells the trials' processes from the rest. (Subtracting each trial's
    loop time from the total instead understated the rest: a loop that waits for a core takes
    longer than the CPU time it gets.) Once a second: a sample of a local Ray's 25 processes costs
    6 ms of CPU in this process, which on the Ray side is the search's driver: four a second took
    4 CPU-s from a 170-s search on 2 cores, and the plain side's few processes cost it little.
    """

    def __init__(self, is_trial, interval: float = 1.0) -> None:
        self.is_trial, self.interval, self._stop = is_trial, interval, threading.Event()
        self.seen: dict[tuple, float] = {}
        self.names: dict[tuple, str] = {}
        self.trials: set[tuple] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                key = (process.pid, process.create_time())
                times = process.cpu_times()
                command = process.cmdline()
                if key not in self.trials and self.is_trial(" ".join(command)):
                    self.trials.add(key)  # Ray names a worker for what it runs: once a trial, always one
                self.names[key] = _process_name(command)  # Ray renames a worker for what it runs now
                self.seen[key] = times.user + times.system
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuMeter":
        self._sample()
        self.before = dict(self.seen)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _used(self, keys) -> float:
        return sum(self.seen[key] - self.before.get(key, 0.0) for key in keys)

    @property
    def trials_cpu_s(self) -> float:
        return self._used(self.trials)

    @property
    def cpu_s(self) -> float:
        return self._used(self.seen)

    def by_name(self) -> dict[str, float]:
        """CPU seconds of the processes outside the trials, by what they were last seen running."""
        totals: dict[str, float] = {}
        for key in set(self.seen) - self.trials:
            totals[self.names[key]] = totals.get(self.names[key], 0.0) + self._used([key])
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _process_name(command: list[str]) -> str:
    """`ray::ReadChunks` for a Ray worker, `raylet`, `python -m ray.dashboard.dashboard`, ..."""
    if not command:
        return "?"
    if command[0].startswith("ray::"):
        return command[0].split()[0]
    program, rest = Path(command[0]).name, command[1:]
    if not program.startswith("python"):
        return program
    while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
        rest = rest[1:]  # -u, -B, ...
    if not rest:
        return program
    if rest[0] == "-m" and len(rest) > 1:
        return f"python -m {rest[1]}"
    return f"python {rest[0] if rest[0] in ('-m', '-c') else Path(rest[0]).name}"


# --- The baseline: Optuna in worker processes, no Ray ---------------------------------------------

class ReplayPruner(optuna.pruners.BasePruner):
    """Stops trial number n after `evaluations[n]` evaluations: where the search's ASHA stopped it."""

    def __init__(self, evaluations: dict[int, int], most: int) -> None:
        self.evaluations, self.most = evaluations, most

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        stop = self.evaluations[trial.number]
        return trial.last_step is not None and trial.last_step >= stop and stop < self.most


_WORKER: dict = {}  # what each baseline worker process prepares once


def training_items_and_blocks(config: Config) -> tuple[list, list]:
    """The default data's training items and validation blocks, split and cut as the search does."""
    data = config.data
    train_items, val_items = plan_split([str(p) for p in resolve_inputs(None)])
    norm = IntensityNorm(data.intensity_percentile)
    pairs = [make_pair(read_volume(i.path), i.part, data.acquisition(), norm, validation=True) for i in val_items]
    return train_items, make_block_cases(pairs, data.scale_factor)


def _worker_init(base: dict, threads: int, storage_file: str, study_name: str, pruner: ReplayPruner) -> None:
    config = Config.from_dict(base)
    set_threads(threads)
    train_items, cases = training_items_and_blocks(config)
    _WORKER.update(
        base=config, train_items=train_items, cases=cases, trials=0,
        study=optuna.load_study(study_name=study_name, storage=_journal(storage_file), pruner=pruner),
    )


def _journal(path: str) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def _worker_trial(trial_id: int, number: int, params: dict) -> dict:
    from hpo.loop import Diverged, Runtime, autocast_dtype, train

    origin = psutil.Process().create_time() if _WORKER["trials"] == 0 else time.time()
    _WORKER["trials"] += 1
    config = _WORKER["base"].override(params)
    data = config.data
    total = int(1.1 * config.train.max_steps * data.batch_size) + data.batch_size
    chunks = plan_chunks(_WORKER["train_items"], total, stream_seed(config.train.seed, number))
    batches = chunk_batches(chunks, config.patch_spec(), data.batch_size)
    first_step: list[float] = []

    def timed():
        for batch in batches:
            if not first_step:
                first_step.append(time.time())
            yield batch

    trial = optuna.trial.Trial(_WORKER["study"], trial_id)
    last: dict = {}

    def report(metrics: dict, checkpoint) -> None:
        last.update(metrics)
        trial.report(metrics[METRIC], int(metrics["step"]) // config.train.eval_every)
        if trial.should_prune():
            raise optuna.TrialPruned()

    grid = get_degradation(data.degradation).grid
    validator = Validator(_WORKER["cases"], data.scale_factor, grid, autocast_dtype=autocast_dtype(config, Runtime().device))
    state = "complete"
    try:
        train(config, timed(), validator, report)
    except optuna.TrialPruned:
        state = "pruned"
    except Diverged as err:  # as the search ends a diverged trial: at once, no value worth keeping
        state, last["step"] = "failed", err.step
    return {"state": state, "value": last.get(METRIC, math.nan), "steps": int(last["step"]),
            "train_s": last.get("time/elapsed_s", 0.0), "startup_s": first_step[0] - origin}


def plain_search(base: Config, replay: list[dict], plan: TrialResources, seed: int, workdir: Path) -> Side:
    """The search's trials (`Side.per_trial` of the Ray side, by index) again, with Optuna and processes."""
    storage_file = str(workdir / "optuna.journal")
    defaults = base.flat()
    evaluations = {number: t["steps"] // base.train.eval_every for number, t in enumerate(replay)}
    pruner = ReplayPruner(evaluations, most=base.train.max_steps // base.train.eval_every)
    study = optuna.create_study(study_name="plain", storage=_journal(storage_file), direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    keys = searched_keys()
    for t in replay:
        study.enqueue_trial({key: type(defaults[key])(t[key]) for key in keys})  # typed: MLflow keeps strings
    side = Side()
    threads = max(1, round(plan.cpus_per_worker))
    context = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with CpuMeter(lambda command: "spawn_main" in command) as meter, context.Pool(
        plan.max_concurrent, initializer=_worker_init, initargs=(base.to_dict(), threads, storage_file, "plain", pruner)
    ) as pool:
        running: dict = {}
        launched = 0
        while launched < len(replay) or running:
            while launched < len(replay) and len(running) < plan.max_concurrent:
                trial = study.ask()
                search_space(trial)
                running[trial.number] = (trial, pool.apply_async(_worker_trial, (trial._trial_id, trial.number, trial.params)))
                launched += 1
            time.sleep(0.02)
            for number in [n for n, (_, result) in running.items() if result.ready()]:
                trial, result = running.pop(number)
                outcome = result.get()
                # As the search tells Optuna of a trial that ASHA stopped: complete, with its last value.
                if outcome["state"] == "failed":
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, outcome["value"])
                side.trials += 1
                side.steps += outcome["steps"]
                side.train_s += outcome["train_s"]
                side.startup_s.append(outcome["startup_s"])
                side.per_trial.append({"index": number, "steps": outcome["steps"], "train_s": outcome["train_s"],
                                       METRIC: outcome["value"], **trial.params})
                if outcome["value"] == outcome["value"]:
                    side.best = max(outcome["value"], side.best) if side.best == side.best else outcome["value"]
    side.wall_s = time.perf_counter() - start
    side.cpu_s, side.trials_cpu_s, side.outside_cpu_s = meter.cpu_s, meter.trials_cpu_s, meter.by_name()
    return side


# --- The search itself ----------------------------------------------------------------------------

def ray_search(args: argparse.Namespace, fixed: dict, workdir: Path) -> Side:
    from mlflow.tracking import MlflowClient

    from hpo import search
    from hpo.tracking import PARENT_TAG, SEARCH_TAG
    from hpo.trial import TRIAL_INDEX

    searched = set(searched_keys())

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    argv = ["--trials", str(args.trials), "--steps-per-trial", str(args.steps), "--eval-every", str(args.eval_every),
            "--seed", str(args.seed), "--name", "bench", "--storage", str(workdir / "ray"), "--tracking-uri", uri,
            "--refit-minutes", "0"]  # the search alone, as the plain-Optuna side
    argv += [arg for key, value in fixed.items() for arg in ("--set", f"{key}={value}")]
    # The tracking store exists before the clock starts, as it does after a user's first search:
    # creating one (MLflow's schema migrations) took 2.7 s of a core, a cost of neither Ray nor a search.
    MlflowClient(uri).search_experiments()
    start = time.perf_counter()
    with CpuMeter(lambda command: command.startswith("ray::ImplicitFunc")) as meter:  # Tune's trial actors
        code = search.main(argv)
    side = Side(wall_s=time.perf_counter() - start, cpu_s=meter.cpu_s, trials_cpu_s=meter.trials_cpu_s,
                outside_cpu_s=meter.by_name())
    if code != 0:
        raise SystemExit(f"error: the search failed (exit code {code})")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mri-sr-search")
    parent = client.search_runs([experiment.experiment_id], f"tags.`{SEARCH_TAG}` = 'bench'")[0]
    for run in client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"):
        metrics = run.data.metrics
        side.trials += 1
        steps = int(client.get_metric_history(run.info.run_id, METRIC)[-1].step)
        side.steps += steps
        side.train_s += metrics["time/elapsed_s"]
        side.startup_s.append(metrics["time/startup_s"])
        side.per_trial.append({"index": int(run.data.params[TRIAL_INDEX]), "steps": steps, "train_s": metrics["time/elapsed_s"],
                               METRIC: metrics[METRIC], **{k: v for k, v in run.data.params.items() if k in searched}})
        side.best = max(metrics[METRIC], side.best) if side.best == side.best else metrics[METRIC]
    return side


# --- Patch production -----------------------------------------------------------------------------

def patch_rates(base: Config, patches: int, seed: int) -> dict[str, float]:
    """Patch pairs per second: Ray Data with its tasks on one core, and the pure function alone."""
    import ray

    from data_pipeline.ray_data import patch_stream
    from hpo.search import start_ray

    data = base.data
    spec = base.patch_spec()
    train_items, _ = plan_split([str(p) for p in resolve_inputs(None)])
    chunks = plan_chunks(train_items, patches, seed)
    cut_chunk(chunks[0], spec)  # read and degrade the volume once, as a data worker does
    start = time.perf_counter()
    cut = sum(len(cut_chunk(chunk, spec)[0]) for chunk in chunks)
    alone = cut / (time.perf_counter() - start)

    start_ray(dashboard=False)  # the stream needs no dashboard
    ray.data.DataContext.get_current().enable_progress_bars = False
    warm = patch_stream(plan_chunks(train_items, 1024, seed + 1), spec, max_tasks=1)
    for _ in warm.iter_torch_batches(batch_size=data.batch_size):  # data workers read and degrade once
        pass
    stream = patch_stream(chunks, spec, max_tasks=1)  # one task at a time: one core
    start = time.perf_counter()
    pulled = sum(len(batch["lr"]) for batch in stream.iter_torch_batches(batch_size=data.batch_size))
    ray_rate = pulled / (time.perf_counter() - start)
    return {"ray_data": ray_rate, "pure_function": alone}


# --- The device --------------------------------------------------------------------------------------

def step_time(config: Config, device, steps: int) -> dict[str, float]:
    """Seconds per training step (D then G) of `config` on `device`, fed from host memory."""
    import torch

    from hpo.loop import Runtime, train

    from models.conditioning import model_input

    data, spec = config.data, config.patch_spec()
    a, b, c = data.factors
    hr = torch.rand((data.batch_size, 1, *spec.hr_shape), generator=torch.Generator().manual_seed(0))
    lr = torch.from_numpy(model_input(hr[:, :, ::a, ::b, ::c].numpy(), 0.02 if spec.noise_map else None))

    def batches():
        while True:
            yield lr, hr

    def run(count: int) -> dict[str, float]:
        budget = {"train.max_steps": count, "train.eval_every": 10**9}
        return train(config.override(budget), batches(), None, lambda metrics, checkpoint: None, Runtime(device=device))

    run(5)  # kernel selection and allocator warm-up
    metrics = run(steps)
    seconds = metrics["time/elapsed_s"] / steps
    return {"seconds_per_step": seconds, "patches_per_s": data.batch_size / seconds}


class Utilisation:
    """The device's busy share, sampled in a thread: NVML's GPU utilisation, or the CPUs' on a CPU."""

    def __init__(self, device, interval: float = 0.2) -> None:
        self.samples: list[float] = []
        self._stop, self.interval, self.source = threading.Event(), interval, "CPU"
        self._read = lambda: psutil.cpu_percent()
        if device.type == "cuda":
            import pynvml  # nvidia-ml-py, beside the CUDA build of torch

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self._read, self.source = (lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)), "GPU"
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self._read())

    def __enter__(self) -> "Utilisation":
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = sorted(self.samples) or [0.0]
        return {"mean": sum(values) / len(values), "median": values[len(values) // 2], "samples": len(values)}


def ddp_check(config: Config, device, steps: int, seed: int) -> dict:
    """The several-worker trial's path on the device's backend: a Ray Train run of `hpo.trial.worker_loop`.

    NCCL on a GPU, gloo on a CPU: every step all-reduces its progress through it. One worker, as
    NCCL takes a GPU per rank and one GPU is what a check machine is sure to have.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from data_pipeline.dataset import PATCHES_PER_CHUNK
    from data_pipeline.ray_data import patch_stream
    from hpo.search import start_ray
    from hpo.trial import worker_loop

    gpu = device.type == "cuda"
    backend = "nccl" if gpu else "gloo"
    config = config.override({"train.max_steps": steps, "train.eval_every": max(1, steps // 2)})
    train_items, blocks = training_items_and_blocks(config)
    patches = steps * config.data.batch_size + PATCHES_PER_CHUNK
    chunks = plan_chunks(train_items, patches, seed, PATCHES_PER_CHUNK)
    start_ray()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = TorchTrainer(
            worker_loop,
            train_loop_config={"config": config.to_dict(), "val_cases": ray.put(blocks),
                               "cpus_per_worker": 1.0, "origin": time.time()},
            torch_config=TorchConfig(backend=backend),
            scaling_config=ScalingConfig(num_workers=1, use_gpu=gpu,
                                         resources_per_worker={"CPU": 1, "GPU": 1} if gpu else {"CPU": 1}),
            run_config=RunConfig(name="ddp-check", storage_path=tmp),
            datasets={"train": patch_stream(chunks, config.patch_spec(), 2)},
        ).fit()
        wall = time.perf_counter() - start
    if result.error is not None:
        raise SystemExit(f"error: the Ray Train run on {backend} failed: {result.error}")
    metrics = result.metrics
    return {"backend": backend, "wall_s": wall, "steps": int(metrics["step"]), METRIC: metrics[METRIC],
            "patches_per_s": metrics["train/patches_per_s"], "startup_s": metrics["time/startup_s"]}


def device_check(config: Config, fast: bool, seed: int) -> dict:
    import torch

    from data_pipeline.nifti import write_volume
    from hpo import search, superresolve
    from hpo.loop import build_models, checkpoint_meta
    from hpo.runtime import pick_device
    from models.checkpoint import save_checkpoint

    device = pick_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    if device.type == "cpu":
        set_threads()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    steps = 5 if fast else 200
    out: dict = {"device": name, "step": {}}
    print(f"\n{name}: default model ({config.model.base_channels} channels, {config.model.num_blocks} blocks), "
          f"batches of {config.data.batch_size} x {config.data.patch_size}^3 LR patches")
    for precision in ("fp32", "bf16"):
        out["step"][precision] = step_time(config.override({"train.precision": precision}), device, steps)
        print(f"  training step, {precision:4}         {1000 * out['step'][precision]['seconds_per_step']:8.1f} ms"
              f"   {out['step'][precision]['patches_per_s']:8.0f} patches/s consumed")

    # What feeds it: one data core's production, and the cores that keep the trainer under a third of it.
    produced = patch_rates(config, 1024 if fast else 4096, seed)["ray_data"]
    consumed = max(step["patches_per_s"] for step in out["step"].values())
    out["data"] = {"produced_per_core": produced, "consumed": consumed, "cores_for_a_third": 3 * consumed / produced}
    print(f"  Ray Data, one core                {produced:8.0f} patches/s produced: "
          f"{3 * consumed / produced:.1f} data cores keep the trainer at a third of production")

    # Whole-volume inference as a user runs it: a 90 x 108 x 90 LR scan -> 180 x 216 x 180.
    with tempfile.TemporaryDirectory() as tmp:
        generator, _ = build_models(config)
        save_checkpoint(Path(tmp) / "model", checkpoint_meta(config), {"generator": generator.state_dict()})
        shape = (30, 36, 30) if fast else (90, 108, 90)
        volume = torch.rand(shape, generator=torch.Generator().manual_seed(seed)).numpy() * 100
        write_volume(Path(tmp) / "lr.nii.gz", volume, np.diag([2.0, 2.0, 2.0, 1.0]))
        argv = [str(Path(tmp) / "lr.nii.gz"), str(Path(tmp) / "sr.nii.gz"), "--checkpoint", str(Path(tmp) / "model"),
                "--device", str(device), "--no-progress"]
        superresolve.main(argv)  # warm-up: kernels, allocator
        start = time.perf_counter()
        superresolve.main(argv)
        out["inference"] = {"output_shape": [2 * n for n in shape], "seconds": time.perf_counter() - start}
    print(f"  super-resolve to {'x'.join(map(str, out['inference']['output_shape']))}   "
          f"{out['inference']['seconds']:8.1f} s (hpo/superresolve.py, whole volume)")

    out["ddp"] = ddp_check(config, device, 4 if fast else 400, seed)
    ddp = out["ddp"]
    print(f"  Ray Train worker, {ddp['backend']:5}         {ddp['wall_s']:8.1f} s for {ddp['steps']} steps "
          f"({ddp['patches_per_s']:.0f} patch pairs/s in its last window), {METRIC} {ddp[METRIC]:.2f} dB")

    # Utilisation while a real 2-trial search runs on the device.
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--trials", "2", "--name", "device", "--storage", f"{tmp}/ray", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
                "--refit-minutes", "0"]
        argv += ["--fast"] if fast else ["--steps-per-trial", "400", "--eval-every", "100"]
        if device.type == "cuda":
            argv += ["--gpus-per-worker", "1"]
        start = time.perf_counter()
        with Utilisation(device) as busy:
            code = search.main(argv)
        out["search"] = {"exit_code": code, "wall_s": time.perf_counter() - start, "utilisation": busy.summary(),
                         "source": busy.source}
    u = out["search"]["utilisation"]
    print(f"  2-trial search                    {out['search']['wall_s']:8.1f} s   {busy.source} busy "
          f"{u['mean']:.0f} % on average (median {u['median']:.0f} %, {u['samples']} samples), exit code {code}")
    return out


# --fast: a small model and budget, so that the whole benchmark runs in a couple of minutes (CI runs it).
FAST = {"model.base_channels": 8, "model.num_blocks": 1, "model.disc_channels": 8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=400, help="steps of a trial never stopped (the search's default)")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=2,
                        help="search-then-baseline pairs; the ratio pools them (the machine's speed drifts)")
    parser.add_argument("--patches", type=int, default=8192, help="patch pairs pulled to measure production")
    parser.add_argument("--only", choices=["search", "patches", "device"], help="run one part (default: search and patches)")
    parser.add_argument("--fast", action="store_true", help="a small model, 2 trials of 4 steps: the whole path in minutes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    fixed = dict(FAST) if args.fast else {}
    if args.fast:
        args.trials, args.steps, args.eval_every, args.patches = 2, 4, 2, 1024
    base = Config().override(fixed | {"train.max_steps": args.steps, "train.eval_every": args.eval_every,
                                      "train.time_budget_s": 24 * 3600.0, "train.seed": args.seed})
    report: dict = {"cpu": _cpu_name(), "trials": args.trials, "steps_per_trial": args.steps}
    if args.only == "device":
        report |= device_check(base, args.fast, args.seed)
    if args.only in (None, "search"):
        report |= compare_searches(args, base, fixed)
    if args.only in (None, "patches"):
        rates = patch_rates(base, args.patches, args.seed)
        print(f"\npatch pairs per second per data core ({base.data.patch_size}^3 LR, batches of {base.data.batch_size}):")
        print(f"  Ray Data stream, tasks on one core  {rates['ray_data']:8.0f}")
        print(f"  the cutting function alone          {rates['pure_function']:8.0f}   "
              f"Ray Data keeps {rates['ray_data'] / rates['pure_function']:.0%}")
        report["patches_per_s"] = rates
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def compare_searches(args: argparse.Namespace, base: Config, fixed: dict) -> dict:
    """`args.pairs` times: the search, then the baseline replaying it; each pair's ratio and the pooled one.

    A pair's sides run minutes apart, and a shared machine's speed moves by a third in minutes (the
    same plain search took 163 to 251 s within a day here): one pair's ratio is partly that drift.
    Each side prints its training loop's milliseconds per step, which shows the machine's speed.
    """
    import ray

    plan = plan_resources([{"CPU": float(len(os.sched_getaffinity(0)))}], 1)  # what the search plans here
    threads = max(1, round(plan.cpus_per_worker))
    pairs = []
    for number in range(args.pairs):
        with tempfile.TemporaryDirectory() as tmp:
            ours = not ray.is_initialized()
            searched = ray_search(args, fixed, Path(tmp))
            if ours:
                ray.shutdown()  # the baseline runs on a machine without Ray's services
            (Path(tmp) / "plain").mkdir()
            replay = sorted(searched.per_trial, key=lambda t: t["index"])
            plain = plain_search(base, replay, plan, args.seed, Path(tmp) / "plain")
        same = sum(map(_same_trial, replay, sorted(plain.per_trial, key=lambda t: t["index"])))
        ratio = searched.wall_s / plain.wall_s
        pace = host_pace(searched, plain)
        pairs.append({"search": asdict(searched), "plain": asdict(plain), "ratio": ratio, "same_trials": same,
                      "host_pace": pace, "ratio_at_equal_pace": ratio * pace})
        print(f"\npair {number + 1} of {args.pairs}: {args.trials} trials, at most {args.steps} steps each, "
              f"{plan.max_concurrent} at once x {threads} thread(s); {_cpu_name()}")
        print(f"{'':34}{'wall':>9}{'ratio':>8}{'steps':>8}{'ms/step in loop':>17}{'trials CPU-ms/step':>20}"
              f"{'start-up per trial':>26}{'CPU-s/trial outside trials':>28}")
        for label, side, r in (("plain Optuna, worker processes", plain, 1.0),
                               ("hpo/search.py (Ray)", searched, ratio)):
            startup = sorted(side.startup_s)
            print(f"{label:34}{side.wall_s:8.1f}s{r:7.2f}x{side.steps:8d}{1000 * side.train_s / max(1, side.steps):17.0f}"
                  f"{1000 * side.trials_cpu_s / max(1, side.steps):20.0f}"
                  f"{f'median {startup[len(startup) // 2]:.1f} s, max {startup[-1]:.1f} s':>26}"
                  f"{side.outside_trials_cpu_s():27.1f}")
        print(f"the same steps and {METRIC} in {same} of {len(replay)} trials (best {plain.best:.2f} dB plain, "
              f"{searched.best:.2f} dB search)")
        top = ", ".join(f"{name} {cpu:.1f}" for name, cpu in list(searched.outside_cpu_s.items())[:6])
        print(f"the search's CPU-s outside its trials, by process: {top}")
    plain_wall = sum(p["plain"]["wall_s"] for p in pairs)
    pooled = sum(p["search"]["wall_s"] for p in pairs) / plain_wall
    at_pace = sum(p["search"]["wall_s"] * p["host_pace"] for p in pairs) / plain_wall
    each = ", ".join(f"{pair['ratio']:.2f}x" for pair in pairs)
    each_at_pace = ", ".join(f"{pair['ratio_at_equal_pace']:.2f}x" for pair in pairs)
    print(f"\nhpo/search.py against plain Optuna, {len(pairs)} pair(s): {pooled:.2f}x the wall time (pairs: {each})")
    print(f"estimated at one host speed (the baseline's trials' CPU-s per step): {at_pace:.2f}x (pairs: {each_at_pace})")
    return {"pairs": pairs, "ratio": pooled, "ratio_at_equal_pace": at_pace}


def host_pace(searched: Side, plain: Side) -> float:
    """How much faster the host ran the same training steps during the search than during the baseline.

    Both sides train the same steps of the same trials to the same scores, so their trials' CPU-s
    per step differ only as the host's speed does (a shared machine's drifts by a third within
    minutes; a 1.53x pair here spent 578 CPU-s on steps that took 455 minutes later) and by the
    little each side's trial processes do besides training: the search's stream executor and
    checkpoint copies, the baseline's patch cutting. The search's wall time times this is the
    ratio the pair would have measured on a host of one speed: an estimate, printed beside the
    measured ratio, never instead of it.
    """
    return (plain.trials_cpu_s / max(1, plain.steps)) / max(1e-9, searched.trials_cpu_s / max(1, searched.steps))


def _same_trial(a: dict, b: dict) -> bool:
    """Both sides trained the trial for the same steps to the same score (NaN for a diverged one)."""
    x, y = a[METRIC], b[METRIC]
    return a["steps"] == b["steps"] and (math.isclose(x, y, abs_tol=1e-4) or (math.isnan(x) and math.isnan(y)))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
