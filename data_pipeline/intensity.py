"""Intensity normalisation stored with the model, so output comes back in the input's units."""

from dataclasses import asdict, dataclass

import numpy as np


# Brain, where scores are taken: HR voxels above this fraction of the HR's maximum (the HR is
# normalised to [0, 1], so 0.2 of it). Without a mask it is the brain mask of every score.
BRAIN_THRESHOLD = 0.2


def foreground(volume: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Voxels brighter than `fraction` of the volume's high percentile: brain, not background."""
    return volume > fraction * np.percentile(volume, 99.5)


@dataclass(frozen=True)
class IntensityNorm:
    """Divide by a high percentile of the LR volume's foreground.

    Computed from the LR volume, because that is all inference has. The foreground (voxels above 1%
    of the maximum) keeps the empty background of skull-stripped scans from dragging the percentile.
    """

    percentile: float = 99.5

    def scale_of(self, lr: np.ndarray) -> float:
        foreground = lr[lr > 0.01 * lr.max()]
        scale = float(np.percentile(foreground if foreground.size else lr, self.percentile))
        if not scale > 0:
            raise ValueError(f"intensity scale {scale} is not positive; is the volume all negative?")
        return scale

    def to_dict(self) -> dict:
        return asdict(self)
