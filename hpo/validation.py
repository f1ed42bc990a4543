"""The one evaluator. The search optimises `METRIC`; nothing it searches can change how it is measured.

Metrics follow PROTOCOL.md: the HR volume normalised to [0, 1] by its maximum, PSNR inside the brain
(HR above 0.2 of its maximum) and over the whole region, 3D SSIM, on the validation regions.
"""

import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from data_pipeline.dataset import VolumePair, make_pair, plan_split, resolve_inputs
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import VolumeError, read_volume
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
# The search's cheaper evaluation (make_block_cases): blocks of this many LR voxels a side.
SEARCH_BLOCKS = 8
SEARCH_BLOCK_LR = 16


@dataclass(frozen=True)
class ValidationCase:
    source: str
    lr: np.ndarray  # LR crop: the region plus context, in model units
    hr: np.ndarray  # HR of the region only, normalised to [0, 1]
    mask: np.ndarray  # brain mask of `hr`
    hr_max: float  # model units -> [0, 1]
    crop: tuple[slice, slice, slice]  # the region inside the SR of `lr`


def make_cases(pairs: list[VolumePair], scale_factor: int) -> list[ValidationCase]:
    """One case per pair: its whole validation region."""
    return [_case(pair, pair.region, pair.source, scale_factor) for pair in pairs]


def held_out_cases(
    data: list[str] | None, degradation: str, scale_factor: int, percentile: float,
    min_shape: tuple[int, int, int] | None = None,
) -> list[ValidationCase]:
    """The whole held-out regions of a data set (`--data` as the search got it; None: the embedded
    template), split as the search splits it. Unusable volumes are left out, as the search left them."""
    usable = []
    for path in resolve_inputs(data):
        try:
            read_volume(path, min_shape)
            usable.append(path)
        except VolumeError:
            continue
    if not usable:
        raise VolumeError(", ".join(data or ["the embedded template"]), "no usable volume")
    _, val_items = plan_split(usable)
    norm = IntensityNorm(percentile)
    pairs = [make_pair(read_volume(item.path), item.part, degradation, scale_factor, norm) for item in val_items]
    return make_cases(pairs, scale_factor)


def make_block_cases(
    pairs: list[VolumePair], scale_factor: int, count: int = SEARCH_BLOCKS, side: int = SEARCH_BLOCK_LR
) -> list[ValidationCase]:
    """`count` blocks of `side` LR voxels, spread evenly over the brain of the validation regions.

    The search evaluates every trial at least once, so its evaluation must be cheap: eight 32^3 HR
    blocks are about a seventh of the voxels of the whole held-out region of the template. The
    blocks are fixed (no randomness), mostly brain (at least half their voxels), and taken in order
    across the regions, so they cover front to back and left to right.
    """
    s, candidates = scale_factor, []
    for pair in pairs:
        brain = BRAIN_THRESHOLD * pair.hr.max()
        starts = [range(a, max(a, b - side) + 1, side) for a, b in pair.region]
        for corner in itertools.product(*starts):
            block = tuple((o, min(o + side, b)) for o, (_, b) in zip(corner, pair.region))
            if (pair.hr[tuple(slice(s * a, s * b) for a, b in block)] > brain).mean() >= 0.5:
                candidates.append((pair, block))
    if not candidates:  # no block is mostly brain (tiny or odd volumes): fall back to whole regions
        return make_cases(pairs, scale_factor)
    chosen = np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int)
    return [
        _case(pair, block, f"{pair.source} block {tuple(a for a, _ in block)}", scale_factor)
        for pair, block in (candidates[i] for i in sorted(set(chosen)))
    ]


def _case(pair: VolumePair, region, source: str, s: int) -> ValidationCase:
    """`region` (LR voxels) of `pair`, with its LR input widened by up to CONTEXT_LR_VOXELS each side."""
    outer = [(max(a - CONTEXT_LR_VOXELS, 0), min(b + CONTEXT_LR_VOXELS, n)) for (a, b), n in zip(region, pair.lr.shape)]
    lr = pair.lr[tuple(slice(a, b) for a, b in outer)]
    crop = tuple(slice(s * (a - oa), s * (b - oa)) for (a, b), (oa, _) in zip(region, outer))
    hr_max = float(pair.hr.max())  # the whole volume's maximum: blocks and regions share one scale
    hr = pair.hr[tuple(slice(s * a, s * b) for a, b in region)] / hr_max
    return ValidationCase(source, np.ascontiguousarray(lr), hr, hr > BRAIN_THRESHOLD, hr_max, crop)


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
                roi_size=tuple(min(VALIDATION_ROI, n) for n in case.lr.shape),  # never pad a small case
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


def baselines(
    cases: list[ValidationCase], scale_factor: int, grid: str, methods: tuple[str, ...] = tuple(ORDERS)
) -> dict[str, dict[str, float]]:
    """The interpolation floor on the same cases: {"cubic": {"psnr": ..., "ssim": ..., "seconds": ...}, ...}."""
    out = {}
    for method in methods:
        scores, seconds = [], 0.0
        for case in cases:
            start = time.perf_counter()
            sr = interpolate(case.lr, scale_factor, grid, method)
            seconds += time.perf_counter() - start
            scores.append(score(sr, case))
        out[method] = {**{key.removeprefix("val/"): v for key, v in _mean(scores, "val").items()}, "seconds": seconds}
    return out
