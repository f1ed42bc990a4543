"""The training loop: one explicit D step then G step per batch, the same code in one process and under DDP.

Everything that differs between a plain run and a Ray Train worker comes in as a parameter: the batch
stream, the evaluator, the `report` callable, and a `Runtime` (device, rank, DDP wrapping).
"""

import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data_pipeline.degrade import get_degradation
from hpo.config import Config
from hpo.names import ELAPSED, LR_G, PATCHES_PER_S
from hpo.runtime import cpu_has_bf16
from models.checkpoint import load_checkpoint, save_checkpoint, unwrap
from models.discriminator import Discriminator3D
from models.generator import Generator3D
from models.losses import GeneratorLoss, lsgan_discriminator_loss

Batch = tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]
Report = Callable[[dict[str, float], Path | None], None]
Evaluate = Callable[[nn.Module], dict[str, float]]


def _identity(module: nn.Module) -> nn.Module:
    return module


def _same(value: float) -> float:
    return value


def _alone(flag: bool) -> bool:
    return flag


@dataclass
class Runtime:
    """Where and how this process trains; never searched."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    is_main: bool = True  # rank 0: evaluates and writes checkpoints
    prepare_model: Callable[[nn.Module], nn.Module] = _identity  # DDP wrapping under Ray Train
    agree: Callable[[float], float] = _same  # the largest value across ranks (time budgets must agree)
    any_rank: Callable[[bool], bool] = _alone  # true on every rank when true on any


class Diverged(FloatingPointError):
    """The generator's loss became non-finite: training cannot recover from here."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged: generator loss {loss} at step {step}")
        self.step = step


def autocast_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    precision = config.train.precision
    if precision == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
        precision = "bf16" if native else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def generator_kwargs(config: Config) -> dict[str, Any]:
    m = config.model
    return {
        "in_channels": 1,
        "base_channels": m.base_channels,
        "num_blocks": m.num_blocks,
        "scale_factor": config.data.scale_factor,
        "upsampler": m.upsampler,
        "batch_norm": m.batch_norm,
        "global_skip": m.global_skip,
        "grid": get_degradation(config.data.degradation).grid,
        "noise_map": m.noise_map,
    }


def checkpoint_meta(config: Config) -> dict[str, Any]:
    """Everything `superresolve` needs, without the training code."""
    return {
        "generator": generator_kwargs(config),
        "degradation": config.data.degradation,
        "grid": get_degradation(config.data.degradation).grid,
        "scale_factor": config.data.scale_factor,
        "acquisition": config.data.acquisition().describe(),
        "intensity": {"percentile": config.data.intensity_percentile},
        "config": config.to_dict(),
    }


def build_models(config: Config) -> tuple[Generator3D, Discriminator3D | None]:
    generator = Generator3D(**generator_kwargs(config))
    discriminator = None
    if config.loss.adversarial_weight > 0:
        discriminator = Discriminator3D(1, config.model.disc_channels, config.model.disc_layers)
    return generator, discriminator


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _cosine(progress: float, min_fraction: float) -> float:
    return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(
    config: Config,
    batches: Iterator[Batch],
    evaluate: Evaluate | None,
    report: Report,
    runtime: Runtime | None = None,
    resume_from: Path | None = None,
) -> dict[str, float]:
    """Train until the step or time budget is spent; report metrics (and a checkpoint) every evaluation."""
    runtime = runtime or Runtime()
    device, cfg = runtime.device, config
    torch.manual_seed(cfg.train.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: cuDNN times its kernels once, keeps the fastest
    generator, discriminator = build_models(cfg)
    # Channels-last 3D: oneDNN and cuDNN run these convs faster in NDHWC (a G+D step 1.15-1.27x
    # on a CPU, the 1-channel output conv 2.6x); state_dicts load either way.
    generator.to(device, memory_format=torch.channels_last_3d)
    opt_g = torch.optim.Adam(generator.parameters(), cfg.optim.lr_g, betas=(cfg.optim.beta1, cfg.optim.beta2))
    opt_d = None
    if discriminator is not None:
        discriminator.to(device, memory_format=torch.channels_last_3d)
        opt_d = torch.optim.Adam(discriminator.parameters(), cfg.optim.lr_d, betas=(cfg.optim.beta1, cfg.optim.beta2))
    criterion = GeneratorLoss(cfg.loss.content_weight, cfg.loss.gradient_weight, cfg.loss.adversarial_weight, cfg.loss.content)

    step, elapsed_before = 0, 0.0
    if resume_from is not None:
        _, state = load_checkpoint(resume_from, map_location=device)
        generator.load_state_dict(state["generator"])
        opt_g.load_state_dict(state["opt_g"])
        if discriminator is not None:
            discriminator.load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["opt_d"])
        step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
    resumed_from_step = step

    # DDP wrapping comes after loading, so the state_dict keys never carry a "module." prefix.
    generator = runtime.prepare_model(generator)
    if discriminator is not None:
        discriminator = runtime.prepare_model(discriminator)
    amp = autocast_dtype(cfg, device)

    def progress(elapsed: float) -> float:
        by_steps = step / cfg.train.max_steps if cfg.train.max_steps else 0.0
        return runtime.agree(max(by_steps, elapsed / cfg.train.time_budget_s))

    def checkpoint_and_report(metrics: dict[str, float], elapsed: float) -> None:
        if not runtime.is_main:
            report(metrics, None)
            return
        state = {
            "generator": unwrap(generator).state_dict(),
            "opt_g": opt_g.state_dict(),
            "step": step,
            "elapsed_s": elapsed,
        }
        if discriminator is not None:
            state |= {"discriminator": unwrap(discriminator).state_dict(), "opt_d": opt_d.state_dict()}
        with tempfile.TemporaryDirectory(prefix="mri-sr-ckpt-") as tmp:
            save_checkpoint(tmp, checkpoint_meta(cfg), state)
            report(metrics, Path(tmp))

    sums: dict[str, float] = {}
    window_start, window_steps, patches = time.perf_counter(), 0, 0
    start = time.perf_counter() - elapsed_before
    metrics: dict[str, float] = {}
    generator.train()
    done_fraction = progress(time.perf_counter() - start)
    while done_fraction < 1.0:
        lr_batch, hr_batch = (
            torch.as_tensor(t).to(device, non_blocking=True, memory_format=torch.channels_last_3d) for t in next(batches)
        )
        # lr_batch: (B, 1 + noise map, p...); hr_batch: (B, 1, s*p...)
        scale = _cosine(done_fraction, cfg.optim.min_lr_fraction)
        for group in opt_g.param_groups:
            group["lr"] = cfg.optim.lr_g * scale
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            sr_batch = generator(lr_batch)
        assert sr_batch.shape == hr_batch.shape, f"G made {tuple(sr_batch.shape)}, HR is {tuple(hr_batch.shape)}"

        # --- Discriminator step: real HR patches towards REAL_TARGET, generated ones towards FAKE_TARGET ---
        fake_scores = None
        if discriminator is not None:
            for group in opt_d.param_groups:
                group["lr"] = cfg.optim.lr_d * scale
            _set_requires_grad(discriminator, True)
            # D runs in fp32, outside autocast: it is cheap, and oneDNN's bf16 weight gradient of its
            # 1-channel score conv came back NaN on one CPU thread (torch 2.13), as in a Ray worker.
            # One forward over real and fake together: DDP expects one forward per backward.
            scores = discriminator(torch.cat([hr_batch, sr_batch.detach().float()]))
            real_scores, fake_scores_d = scores.chunk(2)
            loss_d = lsgan_discriminator_loss(real_scores, fake_scores_d)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            sums["train/loss_d"] = sums.get("train/loss_d", 0.0) + loss_d.item()
            sums["train/d_real"] = sums.get("train/d_real", 0.0) + real_scores.mean().item()
            sums["train/d_fake"] = sums.get("train/d_fake", 0.0) + fake_scores_d.mean().item()
            # --- Generator sees the updated D, frozen, through the bare module (no DDP sync for D) ---
            _set_requires_grad(discriminator, False)
            fake_scores = unwrap(discriminator)(sr_batch.float())

        # --- Generator step: content + image gradient + adversarial ---
        loss_g, parts = criterion(sr_batch.float(), hr_batch, fake_scores)
        # Every rank stops together: one rank leaving alone would leave the others waiting in DDP.
        if runtime.any_rank(not torch.isfinite(loss_g).item()):
            raise Diverged(step, loss_g.item())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        step += 1
        window_steps += 1
        patches += lr_batch.shape[0]
        sums["train/loss_g"] = sums.get("train/loss_g", 0.0) + loss_g.item()
        for name, value in parts.items():
            sums[f"train/{name}"] = sums.get(f"train/{name}", 0.0) + value.item()

        done_fraction = progress(time.perf_counter() - start)
        if step % cfg.train.eval_every == 0 or done_fraction >= 1.0:
            now = time.perf_counter()
            metrics = {key: value / window_steps for key, value in sums.items()}
            if resume_from is not None:
                metrics["resumed_from_step"] = resumed_from_step  # seen in MLflow: this run restarted
            metrics |= {
                "step": step,
                LR_G: cfg.optim.lr_g * scale,
                PATCHES_PER_S: patches / (now - window_start),
                ELAPSED: now - start,
            }
            if runtime.is_main and evaluate is not None:
                metrics |= evaluate(unwrap(generator))
            checkpoint_and_report(metrics, now - start)
            sums, window_steps, patches = {}, 0, 0
            window_start = time.perf_counter()
    if not metrics:
        # Resumed from a checkpoint taken after the last step (the process died before anyone
        # heard the end): report the final state once more, so every run ends with a report.
        metrics = {"step": step, ELAPSED: elapsed_before, "resumed_from_step": step}
        if runtime.is_main and evaluate is not None:
            metrics |= evaluate(unwrap(generator))
        checkpoint_and_report(metrics, elapsed_before)
    return metrics
