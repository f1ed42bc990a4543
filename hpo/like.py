"""`--like SCAN [SCAN ...]`: the acquisition model fitted to the scans a user means to super-resolve.

The factor per axis is each scan axis's voxel size over the training volumes' (rounded, 1 to 4);
the noise level is estimated from the scans themselves (data_pipeline/noise.py). Training then
validates at the scans' level and draws patch levels from zero to twice it, so the model sees both
cleaner and noisier input than the scans, around what it will be given.
"""

from typing import Any

import numpy as np

from data_pipeline.nifti import VolumeError, read_volume, voxel_sizes
from data_pipeline.noise import estimate_level
from models.grid import MAX_FACTOR, factors_text

# How far a voxel-size ratio may lie from a whole factor before the scan is refused.
FACTOR_TOLERANCE = 0.25


def like_overrides(scans: list[str], hr_voxel_mm: float) -> tuple[dict[str, Any], str]:
    """(config overrides, one line saying what was fitted) for `scans`, given the training volumes'
    voxel size. Raises VolumeError naming the scan that cannot be fitted."""
    if not hr_voxel_mm > 0:
        raise VolumeError(scans[0], "--like needs the training volumes' voxel size, and none could be read")
    factors, levels = None, []
    for path in scans:
        volume = read_volume(path)
        ratio = voxel_sizes(volume.affine) / hr_voxel_mm
        fitted = tuple(int(r) for r in np.clip(np.round(ratio), 1, MAX_FACTOR))
        off = np.abs(ratio - fitted)
        if off.max() > FACTOR_TOLERANCE or fitted == (1, 1, 1):
            shown = "x".join(f"{z:.3g}" for z in voxel_sizes(volume.affine))
            raise VolumeError(path, f"{shown} mm voxels are not 1 to {MAX_FACTOR} whole times (and not all once) the "
                                    f"training volumes' {hr_voxel_mm:.3g} mm")
        if factors is not None and fitted != factors:
            raise VolumeError(path, f"needs {factors_text(fitted)} where {scans[0]} needs {factors_text(factors)}; "
                                    "one model maps one acquisition: give scans of one protocol")
        factors = fitted
        levels.append(estimate_level(volume.data))
    level = float(np.median(levels))
    overrides = {"data.scale_factor": factors, "data.val_noise": round(level, 4), "data.noise_min": 0.0,
                 "data.noise_max": round(min(2 * level, 0.49), 4)}
    line = (f"--like: {len(scans)} scan(s): {factors_text(factors)} from {hr_voxel_mm:.3g} mm training volumes; "
            f"noise about {level:.1%} of the foreground mean (trained on 0-{2 * level:.1%}, validated at {level:.1%})")
    return overrides, line
