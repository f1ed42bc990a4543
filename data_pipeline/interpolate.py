"""Interpolation baselines (nearest, linear, cubic B-spline) on the degradation's grid convention."""

import numpy as np
from scipy import ndimage

from models.grid import Grid, lr_offset

ORDERS = {"nearest": 0, "linear": 1, "cubic": 3}


def interpolate(lr: np.ndarray, scale_factor: int, grid: Grid, method: str = "cubic") -> np.ndarray:
    """(X, Y, Z) -> (sX, sY, sZ) by a spline of the given order; HR voxel o reads LR coordinate o/s + shift."""
    s = scale_factor
    return ndimage.affine_transform(
        lr.astype(np.float32, copy=False),
        matrix=np.full(3, 1 / s),
        offset=lr_offset(s, grid),
        output_shape=tuple(s * n for n in lr.shape),
        order=ORDERS[method],
        mode="nearest",
    )
