"""Where the voxels of an upsampled volume sit in the world (docs/protocol.md, "Geometry")."""

import numpy as np

from models.grid import Factors, Grid, as_factors, lr_offset


def upsampled_affine(affine: np.ndarray, scale_factor: int | Factors, grid: Grid) -> np.ndarray:
    """The voxel-to-world affine of a volume upsampled by (a, b, c) on the LR grid's `grid` convention.

    "corner": LR voxel m sits on HR voxel s*m, so the origin stays and only the axes shrink.
    "centre": each LR voxel splits into s HR voxels over its own footprint along an axis of factor s,
    so the origin moves by -(s-1)/(2s) LR voxel along it. An axis of factor 1 is unchanged; rotation
    and shear are kept in both.
    """
    hr_to_lr = np.eye(4)
    for axis, s in enumerate(as_factors(scale_factor)):
        hr_to_lr[axis, axis] = 1 / s
        hr_to_lr[axis, 3] = lr_offset(s, grid)
    return np.asarray(affine, dtype=np.float64) @ hr_to_lr
