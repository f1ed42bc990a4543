"""The grid convention of a degradation and the scale factors per axis (docs/protocol.md).

Defined once here; the generator's skip, the inference window weights, the interpolation
baselines and the output NIfTI affine all read them from this module.
"""

from collections.abc import Sequence
from typing import Literal

Grid = Literal["corner", "centre"]
Factors = tuple[int, int, int]
MAX_FACTOR = 4


def as_factors(scale_factor: int | Sequence[int]) -> Factors:
    """One factor per axis from an int (isotropic) or three ints; each 1 to MAX_FACTOR, not all 1."""
    factors = (scale_factor,) * 3 if isinstance(scale_factor, int) else tuple(int(s) for s in scale_factor)
    if len(factors) != 3 or not all(1 <= s <= MAX_FACTOR for s in factors) or factors == (1, 1, 1):
        raise ValueError(f"scale factor must be one int or three, each 1 to {MAX_FACTOR} and not all 1; got {scale_factor}")
    return factors  # type: ignore[return-value]


def factors_text(scale_factor: int | Sequence[int]) -> str:
    """"x2" for an isotropic factor, "x1,1,4" for one per axis: how logs and tables name it."""
    f = as_factors(scale_factor)
    return f"x{f[0]}" if len(set(f)) == 1 else "x" + ",".join(map(str, f))


def lr_offset(scale_factor: int, grid: str) -> float:
    """LR coordinate of HR voxel 0 along one axis: HR voxel j sits at LR coordinate j/s + lr_offset.

    "corner": LR voxel m sits on HR voxel s*m (offset 0). "centre": LR voxel m sits at HR position
    s*m + (s-1)/2, so HR voxel 0 is (s-1)/(2s) LR voxel before LR voxel 0. A factor of 1 gives 0.
    """
    if grid == "corner":
        return 0.0
    if grid == "centre":
        return -(scale_factor - 1) / (2 * scale_factor)
    raise ValueError(f"unknown grid convention {grid!r}; choose 'corner' or 'centre'")
