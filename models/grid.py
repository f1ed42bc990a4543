"""The grid convention of a degradation: where LR voxel m sits on the HR grid (PROTOCOL.md).

Defined once here; the generator's skip, the inference window weights, the interpolation
baselines and the output NIfTI affine all read it from this module.
"""

from typing import Literal

Grid = Literal["corner", "centre"]


def lr_offset(scale_factor: int, grid: str) -> float:
    """LR coordinate of HR voxel 0: HR voxel j sits at LR coordinate j/s + lr_offset.

    "corner": LR voxel m sits on HR voxel s*m (offset 0). "centre": LR voxel m sits at HR position
    s*m + (s-1)/2, so HR voxel 0 is (s-1)/(2s) LR voxel before LR voxel 0.
    """
    if grid == "corner":
        return 0.0
    if grid == "centre":
        return -(scale_factor - 1) / (2 * scale_factor)
    raise ValueError(f"unknown grid convention {grid!r}; choose 'corner' or 'centre'")
