"""The device check: a training step in fp32 and bf16, what feeds it, whole-volume inference, a Ray
Train run on the device's collective backend, and the device's busy share during a small search."""

import tempfile
import time
from pathlib import Path

import numpy as np

from data_pipeline.dataset import plan_chunks
from hpo.bench.meters import Utilisation, cpu_name
from hpo.bench.patches import patch_rates
from hpo.bench.plain import training_items_and_blocks
from hpo.config import Config
from hpo.names import ELAPSED, PATCHES_PER_S, STARTUP
from hpo.runtime import set_threads
from hpo.validation import METRIC


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
    seconds = metrics[ELAPSED] / steps
    return {"seconds_per_step": seconds, "patches_per_s": data.batch_size / seconds}


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
    from hpo.ray_runtime import start_ray
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
            "patches_per_s": metrics[PATCHES_PER_S], "startup_s": metrics[STARTUP]}


def device_check(config: Config, fast: bool, seed: int) -> dict:
    import torch

    from data_pipeline.nifti import write_volume
    from hpo import search, superresolve
    from hpo.loop import build_models, checkpoint_meta
    from hpo.runtime import pick_device
    from models.checkpoint import save_checkpoint

    device = pick_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
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
