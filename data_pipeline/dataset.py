"""From a list of NIfTI files or folders to training patches and a fixed validation set (no Ray).

A single volume is split into a training and a validation region along its second voxel axis (y:
anterior-posterior for RAS-ordered scans such as the default template), with a gap between them that
neither side uses. The MNI152 template is left-right symmetric, so a left/right split would leak.
With several volumes, whole volumes are held out instead.
"""

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.default_data import default_volume_paths
from data_pipeline.degrade import crop_to_multiple, get_degradation
from data_pipeline.intensity import IntensityNorm
from data_pipeline.nifti import Volume, VolumeError, is_nifti_path, read_volume
from data_pipeline.patches import PatchSampler, Region, full_region

VALIDATION_FRACTION = 0.3
GAP_HR_VOXELS = 16
HOLD_OUT_EVERY = 5  # with several volumes, every 5th one validates


@dataclass(frozen=True)
class VolumePair:
    """An HR volume (cropped to a multiple of s), its simulated LR, both divided by the LR's scale."""

    source: str
    lr: np.ndarray  # (X, Y, Z)
    hr: np.ndarray  # (sX, sY, sZ)
    intensity_scale: float
    region: Region  # LR voxels this pair may use (the split)


def resolve_inputs(data: list[str] | None) -> list[Path]:
    """NIfTI files from files and folders (searched recursively), or the embedded default."""
    if not data:
        return default_volume_paths()
    paths: list[Path] = []
    for item in data:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_nifti_path(p))
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no .nii or .nii.gz files")
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return paths


def prepare_pair(volume: Volume, degradation: str, scale_factor: int, norm: IntensityNorm) -> tuple[np.ndarray, np.ndarray, float]:
    hr = crop_to_multiple(volume.data, scale_factor)
    lr = get_degradation(degradation)(hr, scale_factor)
    scale = norm.scale_of(lr)
    return lr / scale, hr / scale, scale


def split_single(lr_shape: tuple[int, int, int], scale_factor: int) -> tuple[Region, Region]:
    """(train, validation) regions in LR voxels along y, with the gap between them unused.

    The gap shrinks on tiny volumes (a tenth of y) so that both sides still hold a patch.
    """
    x, y, z = lr_shape
    val_start = int(round(y * (1 - VALIDATION_FRACTION)))
    train_stop = val_start - min(GAP_HR_VOXELS // scale_factor, max(1, y // 10))
    return ((0, x), (0, train_stop), (0, z)), ((0, x), (val_start, y), (0, z))


def load_pairs(
    paths: list[Path],
    degradation: str,
    scale_factor: int,
    patch_size: int,
    norm: IntensityNorm,
    log=lambda msg: print(msg, file=sys.stderr),
) -> tuple[list[VolumePair], list[VolumePair]]:
    """Read, validate and degrade every volume; unusable ones are reported and skipped.

    Returns (training pairs, validation pairs); raises if no usable volume is left.
    """
    min_shape = (scale_factor * patch_size,) * 3
    volumes: list[Volume] = []
    skipped = 0
    for path in paths:
        try:
            volumes.append(read_volume(path, min_shape=min_shape))
        except VolumeError as err:
            skipped += 1
            log(f"skipped {err}")
    if skipped:
        log(f"skipped {skipped} of {len(paths)} volumes")
    if not volumes:
        raise VolumeError(", ".join(map(str, paths[:3])) + ("..." if len(paths) > 3 else ""), "no usable volume")

    train, validation = [], []
    for i, volume in enumerate(volumes):
        lr, hr, scale = prepare_pair(volume, degradation, scale_factor, norm)
        if len(volumes) == 1:
            train_region, val_region = split_single(lr.shape, scale_factor)
            train.append(VolumePair(volume.source, lr, hr, scale, train_region))
            validation.append(VolumePair(volume.source, lr, hr, scale, val_region))
        elif i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1 or (i == len(volumes) - 1 and not validation):
            validation.append(VolumePair(volume.source, lr, hr, scale, full_region(lr.shape)))
        else:
            train.append(VolumePair(volume.source, lr, hr, scale, full_region(lr.shape)))
    return train, validation


def patch_batches(
    pairs: list[VolumePair],
    scale_factor: int,
    patch_size: int,
    batch_size: int,
    seed: int,
    foreground_fraction: float = 0.9,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """An endless stream of (B, 1, p, p, p) LR and (B, 1, sp, sp, sp) HR batches from the training regions."""
    samplers = [
        PatchSampler(pair.lr, pair.hr, scale_factor, patch_size, pair.region, foreground_fraction) for pair in pairs
    ]
    rng = np.random.default_rng(seed)
    while True:
        counts = np.bincount(rng.integers(len(samplers), size=batch_size), minlength=len(samplers))
        parts = [sampler.sample(int(n), rng) for sampler, n in zip(samplers, counts) if n]
        yield np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
