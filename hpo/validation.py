"""The one evaluator. The search optimises `METRIC`; nothing it searches can change how it is measured.

Metrics follow docs/protocol.md: the HR volume normalised to [0, 1] by its maximum, PSNR inside the brain
(HR above 0.2 of its maximum) and over the whole region, 3D SSIM, on the validation regions.
"""

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from data_pipeline.acquisition import Acquisition
from data_pipeline.dataset import VolumePair, held_out_pairs, resolve_inputs
from data_pipeline.intensity import BRAIN_THRESHOLD, IntensityNorm
from data_pipeline.interpolate import ORDERS, interpolate
from data_pipeline.nifti import VolumeError, read_volume
from hpo.names import PSNR, VAL_SECONDS
from models.checkpoint import unwrap
from models.conditioning import model_input
from models.grid import Factors, as_factors
from models.inference import sliding_window_superresolve
from models.metrics import ssim

METRIC = PSNR  # what the search ranks by
MODE = "max"
CONTEXT_LR_VOXELS = 4  # LR voxels of input context around a validation region (inside the split's gap)
# Large windows with little overlap: 1.6x less work per evaluation than superresolve's defaults
# (32, 0.25), which blend more for the best whole-volume output.
VALIDATION_ROI = 48
VALIDATION_OVERLAP = 0.125
# The search's cheaper evaluation (make_block_cases): up to this many blocks of this many HR
# voxels a side, each holding at least this share of brain.
SEARCH_BLOCKS = 16
SEARCH_BLOCK_HR = 32
MIN_BLOCK_BRAIN = 0.05


@dataclass(frozen=True)
class ValidationCase:
    source: str
    lr: np.ndarray  # LR crop: the region plus context, in model units
    hr: np.ndarray  # HR of the region only, normalised to [0, 1]
    mask: np.ndarray  # brain mask of `hr`
    hr_max: float  # model units -> [0, 1]
    crop: tuple[slice, slice, slice]  # the region inside the SR of `lr`
    volume: str = ""  # the volume it comes from: the cases of one volume are scored as one
    sigma: float = 0.0  # the LR volume's noise sigma as inference estimates it (model units)


def make_cases(pairs: list[VolumePair], scale_factor: int | Factors) -> list[ValidationCase]:
    """One case per pair: its whole validation region."""
    return [_case(pair, pair.region, pair.source, as_factors(scale_factor)) for pair in pairs]


def held_out_cases(
    data: list[str] | None, acquisition: Acquisition, percentile: float,
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
    return make_cases(held_out_pairs(usable, acquisition, IntensityNorm(percentile)), acquisition.scale_factor)


def make_block_cases(
    pairs: list[VolumePair], scale_factor: int | Factors, count: int = SEARCH_BLOCKS, side: int = SEARCH_BLOCK_HR
) -> list[ValidationCase]:
    """Up to `count` blocks of `side` HR voxels, spread evenly over the brain of the validation regions.

    The search evaluates every trial at least once, so its evaluation must be cheap: the template's
    held-out region is mostly background, and sixteen 32^3 HR blocks hold 84 % of its brain in a
    fifth of its voxels. Blocks tile each region to its far ends (the last one of a row moved back to
    end there, overlapping its neighbour); those holding at least MIN_BLOCK_BRAIN of brain are
    candidates, taken in order across the regions so they cover front to back and left to right,
    and fixed (no randomness). The brain's edge must be in them: it holds half the squared error of
    a trained generator in 7 % of the brain's voxels, and blocks chosen "mostly brain" (the first
    design) left it out, so they ranked 25-step trials against the whole region with a rank
    correlation of 0.61 (1.00 now; 71 trials of two searches).
    """
    s, candidates = as_factors(scale_factor), []
    sides = [max(1, round(side / f)) for f in s]  # LR voxels a side: cubic in HR voxels
    for pair in pairs:
        brain = BRAIN_THRESHOLD * pair.hr.max()
        for corner in itertools.product(*(_starts(a, b, n) for (a, b), n in zip(pair.region, sides))):
            block = tuple((o, min(o + n, b)) for o, (_, b), n in zip(corner, pair.region, sides))
            if (pair.hr[tuple(slice(f * a, f * b) for (a, b), f in zip(block, s))] > brain).mean() >= MIN_BLOCK_BRAIN:
                candidates.append((pair, block))
    if not candidates:  # no block holds brain (tiny or odd volumes): fall back to whole regions
        return make_cases(pairs, scale_factor)
    chosen = np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int)
    return [
        _case(pair, block, f"{pair.source} block {tuple(a for a, _ in block)}", s, volume=pair.source)
        for pair, block in (candidates[i] for i in sorted(set(chosen)))
    ]


def _starts(a: int, b: int, side: int) -> list[int]:
    """Block starts tiling [a, b) with blocks of `side`; the last one moved back to end at b."""
    starts = list(range(a, max(a, b - side) + 1, side))
    return starts if starts[-1] + side >= b else [*starts, b - side]


def _case(pair: VolumePair, region, source: str, s: Factors, volume: str | None = None) -> ValidationCase:
    """`region` (LR voxels) of `pair`, with its LR input widened by up to CONTEXT_LR_VOXELS each side."""
    outer = [(max(a - CONTEXT_LR_VOXELS, 0), min(b + CONTEXT_LR_VOXELS, n)) for (a, b), n in zip(region, pair.lr.shape)]
    lr = pair.lr[tuple(slice(a, b) for a, b in outer)]
    crop = tuple(slice(f * (a - oa), f * (b - oa)) for (a, b), (oa, _), f in zip(region, outer, s))
    hr_max = float(pair.hr.max())  # the whole volume's maximum: blocks and regions share one scale
    hr = pair.hr[tuple(slice(f * a, f * b) for (a, b), f in zip(region, s))] / hr_max
    return ValidationCase(source, np.ascontiguousarray(lr), hr, hr > BRAIN_THRESHOLD, hr_max, crop, volume or source,
                          pair.sigma)


def score(sr: np.ndarray, case: ValidationCase) -> dict[str, float]:
    """Metrics of one SR of `case.lr` (model units, full SR size) against the case's HR."""
    e = _errors(sr, case)
    return {"psnr": _db(e["se_brain"], e["n_brain"]), "psnr_whole": _db(e["se"], e["n"]), "ssim": e["ssim"]}


def _errors(sr: np.ndarray, case: ValidationCase) -> dict[str, float]:
    """What pooling needs of one case: squared errors summed in the brain and overall, the counts, brain SSIM."""
    sr_t = torch.from_numpy(np.ascontiguousarray(sr[case.crop] / case.hr_max, dtype=np.float32))
    hr_t, mask_t = torch.from_numpy(case.hr.astype(np.float32)), torch.tensor(case.mask)
    err = (sr_t.double() - hr_t.double()) ** 2
    return {
        "se_brain": float(err[mask_t].sum()), "n_brain": float(mask_t.sum()),
        "se": float(err.sum()), "n": float(err.numel()),
        "ssim": ssim(sr_t, hr_t, mask_t) if mask_t.any() else math.nan,
    }


def _db(squared_error: float, count: float) -> float:
    """PSNR (models.metrics.psnr, R = 1) from a sum of squared errors over `count` voxels."""
    return 10 * math.log10(count / max(squared_error, 1e-20 * count)) if count else math.nan


def _pooled(cases: list[ValidationCase], errors: list[dict[str, float]], prefix: str) -> dict[str, float]:
    """The mean over volumes of each volume's metrics, its cases taken as one region.

    A volume's PSNR comes from the squared error summed over all its cases, so its blocks score it
    as its whole region would; a mean of per-block dB weighs a block of easy interior as much as one
    holding the brain's edge, where most of the error is. SSIM: the mean over its brain voxels.
    """
    volumes: dict[str, list[dict[str, float]]] = {}
    for case, e in zip(cases, errors):
        volumes.setdefault(case.volume, []).append(e)
    rows = []
    for parts in volumes.values():
        total = {key: sum(p[key] for p in parts) for key in ("se_brain", "n_brain", "se", "n")}
        with_brain = [p for p in parts if p["n_brain"]]
        rows.append({
            "psnr": _db(total["se_brain"], total["n_brain"]),
            "psnr_whole": _db(total["se"], total["n"]),
            "ssim": (sum(p["ssim"] * p["n_brain"] for p in with_brain) / total["n_brain"]) if with_brain else math.nan,
        })
    return {f"{prefix}{key}": float(np.mean([r[key] for r in rows])) for key in rows[0]}


class Validator:
    """Scores a generator on the fixed validation cases; keeps the last SR of the first case to draw."""

    def __init__(
        self,
        cases: list[ValidationCase],
        scale_factor: int | Factors,
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
        noise_map = getattr(unwrap(generator), "noise_map", False)
        errors, seconds = [], 0.0
        for i, case in enumerate(self.cases):
            start = time.perf_counter()
            sr = sliding_window_superresolve(
                generator,
                # a copy: cases from the object store are read-only
                torch.tensor(model_input(case.lr[None, None], case.sigma if noise_map else None)),
                self.scale_factor,
                self.grid,
                roi_size=tuple(min(VALIDATION_ROI, n) for n in case.lr.shape),  # never pad a small case
                overlap=VALIDATION_OVERLAP,
                device=self.device,
                autocast_dtype=self.autocast_dtype,
            )[0, 0].numpy()
            seconds += time.perf_counter() - start
            errors.append(_errors(sr, case))
            if i == 0:
                self.last_sr = sr[case.crop]
        generator.train(was_training)
        return {**_pooled(self.cases, errors, "val/"), VAL_SECONDS: seconds}


def baselines(
    cases: list[ValidationCase], scale_factor: int | Factors, grid: str, methods: tuple[str, ...] = tuple(ORDERS)
) -> dict[str, dict[str, float]]:
    """The interpolation floor on the same cases: {"cubic": {"psnr": ..., "ssim": ..., "seconds": ...}, ...}."""
    out = {}
    for method in methods:
        errors, seconds = [], 0.0
        for case in cases:
            start = time.perf_counter()
            sr = interpolate(case.lr, scale_factor, grid, method)
            seconds += time.perf_counter() - start
            errors.append(_errors(sr, case))
        out[method] = {**_pooled(cases, errors, ""), "seconds": seconds}
    return out


def figure_rows(case: ValidationCase, sr: np.ndarray, cubic: np.ndarray, scale_factor: int | Factors) -> tuple:
    """(LR, cubic, SR, HR) of a case's region, each in [0, 1] of its HR, for `hpo.preview.save_preview`;
    `sr` and `cubic` are the region's super-resolution in model units."""
    lr_region = case.lr[tuple(slice(c.start // f, c.stop // f) for c, f in zip(case.crop, as_factors(scale_factor)))]
    return lr_region / case.hr_max, cubic / case.hr_max, sr / case.hr_max, case.hr
