"""Interpolation baselines (nearest, linear, cubic B-spline) on the degradation's grid convention."""

import numpy as np
from scipy import ndimage

from models.grid import Factors, Grid, as_factors, lr_offset

ORDERS = {"nearest": 0, "linear": 1, "cubic": 3}


def interpolate(lr: np.ndarray, scale_factor: int | Factors, grid: Grid, method: str = "cubic") -> np.ndarray:
    """(X, Y, Z) -> (aX, bY, cZ) by a spline of the given order; HR voxel o reads LR coordinate
    o/s + lr_offset(s) along each axis of factor s."""
    s = as_factors(scale_factor)
    return ndimage.affine_transform(
        lr.astype(np.float32, copy=False),
        matrix=np.array([1 / f for f in s]),
        offset=[lr_offset(f, grid) for f in s],
        output_shape=tuple(f * n for f, n in zip(s, lr.shape)),
        order=ORDERS[method],
        mode="nearest",
    )
