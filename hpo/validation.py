"""The one evaluator. The search optimises `METRIC`; nothing it searches can change how it is measured.

Metrics follow PROTOCOL.md: the HR volume normalised to [0, 1] by its maximum, PSNR inside the brain
(HR above 0.2 of its maximum) and over the whole region, 3D SSIM, on the validation regions.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from data_pipeline.dataset import VolumePair
from data_pipeline.interpolate import ORDERS, interpolate
from models.inference import sliding_window_superresolve
from models.metrics import psnr, ssim

METRIC = "val/psnr"  # PSNR inside the brain mask, dB
MODE = "max"
BRAIN_THRESHOLD = 0.2
CONTEXT_LR_VOXELS = 4  # LR voxels of input context around a validation region (inside the split's gap)
# Large windows with little overlap: 1.6x less work per evaluation than superresolve's defaults
# (32, 0.25), which blend more for the best whole-volume output.
VALIDATION_ROI = 48
VALIDATION_OVERLAP = 0.125


@dataclass(frozen=True)
class ValidationCase:
    source: str
    lr: np.ndarray  # LR crop: the region plus context, in model units
    hr: np.ndarray  # HR of the region only, normalised to [0, 1]
    mask: np.ndarray  # brain mask of `hr`
    hr_max: float  # model units -> [0, 1]
    crop: tuple[slice, slice, slice]  # the region inside the SR of `lr`


def make_cases(pairs: list[VolumePair], scale_factor: int) -> list[ValidationCase]:
    cases = []
    for pair in pairs:
        s = scale_factor
        outer = [(max(a - CONTEXT_LR_VOXELS, 0), min(b + CONTEXT_LR_VOXELS, n)) for (a, b), n in zip(pair.region, pair.lr.shape)]
        lr = pair.lr[tuple(slice(a, b) for a, b in outer)]
        crop = tuple(slice(s * (a - oa), s * (b - oa)) for (a, b), (oa, _) in zip(pair.region, outer))
        hr_max = float(pair.hr.max())
        hr = pair.hr[tuple(slice(s * a, s * b) for a, b in pair.region)] / hr_max
        cases.append(ValidationCase(pair.source, np.ascontiguousarray(lr), hr, hr > BRAIN_THRESHOLD, hr_max, crop))
    return cases


def score(sr: np.ndarray, case: ValidationCase) -> dict[str, float]:
    """Metrics of one SR of `case.lr` (model units, full SR size) against the case's HR."""
    sr_t = torch.from_numpy(np.ascontiguousarray(sr[case.crop] / case.hr_max, dtype=np.float32))
    hr_t, mask_t = torch.from_numpy(case.hr.astype(np.float32)), torch.from_numpy(case.mask)
    return {
        "psnr": psnr(sr_t, hr_t, mask_t),
        "psnr_whole": psnr(sr_t, hr_t),
        "ssim": ssim(sr_t, hr_t, mask_t),
    }


def _mean(scores: list[dict[str, float]], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{key}": float(np.mean([s[key] for s in scores])) for key in scores[0]}


class Validator:
    """Scores a generator on the fixed validation cases; keeps the last SR of the first case to draw."""

    def __init__(
        self,
        cases: list[ValidationCase],
        scale_factor: int,
        grid: str,
        device: torch.device | str = "cpu",
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.cases, self.scale_factor, self.grid = cases, scale_factor, grid
        self.device, self.autocast_dtype = device, autocast_dtype
        self.last_sr: np.ndarray | None = None  # SR of cases[0], model units, region only

    def __call__(self, generator: nn.Module) -> dict[str, float]:
        """{"val/psnr", "val/psnr_whole", "val/ssim", "val/seconds"} of the generator over the cases.

        "val/seconds" counts the super-resolution alone, not the metrics.
        """
        was_training = generator.training
        generator.eval()
        scores, seconds = [], 0.0
        for i, case in enumerate(self.cases):
            start = time.perf_counter()
            sr = sliding_window_superresolve(
                generator,
                torch.from_numpy(case.lr)[None, None],
                self.scale_factor,
                self.grid,
                roi_size=VALIDATION_ROI,
                overlap=VALIDATION_OVERLAP,
                device=self.device,
                autocast_dtype=self.autocast_dtype,
            )[0, 0].numpy()
            seconds += time.perf_counter() - start
            scores.append(score(sr, case))
            if i == 0:
                self.last_sr = sr[case.crop]
        generator.train(was_training)
        return {**_mean(scores, "val"), "val/seconds": seconds}


def baselines(cases: list[ValidationCase], scale_factor: int, grid: str) -> dict[str, dict[str, float]]:
    """The interpolation floor on the same cases: {"cubic": {"psnr": ..., "ssim": ..., "seconds": ...}, ...}."""
    out = {}
    for method in ORDERS:
        scores, seconds = [], 0.0
        for case in cases:
            start = time.perf_counter()
            sr = interpolate(case.lr, scale_factor, grid, method)
            seconds += time.perf_counter() - start
            scores.append(score(sr, case))
        out[method] = {**{key.removeprefix("val/"): v for key, v in _mean(scores, "val").items()}, "seconds": seconds}
    return out
