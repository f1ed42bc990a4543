"""Where the voxels of an upsampled volume sit in the world (PROTOCOL.md, "Geometry")."""

import numpy as np

from models.grid import Grid, lr_offset


def upsampled_affine(affine: np.ndarray, scale_factor: int, grid: Grid) -> np.ndarray:
    """The voxel-to-world affine of an s-times upsampled volume on the LR grid's `grid` convention.

    "corner": LR voxel m sits on HR voxel s*m, so the origin stays and only the axes shrink.
    "centre": each LR voxel splits into s^3 HR voxels over its own footprint, so the origin moves by
    -(s-1)/(2s) LR voxel along each axis. Rotation and shear are kept in both.
    """
    s = scale_factor
    shift = lr_offset(s, grid)
    hr_to_lr = np.array(
        [[1 / s, 0, 0, shift], [0, 1 / s, 0, shift], [0, 0, 1 / s, shift], [0, 0, 0, 1]], dtype=np.float64
    )
    return np.asarray(affine, dtype=np.float64) @ hr_to_lr
