"""The acquisition model: how a scanner's low-resolution scan is simulated from a high-resolution volume.

One value names everything that makes two scores comparable: the degradation (blur or slice
profile, and its grid convention), the factor per axis, the slice thickness, the noise range drawn
per training patch and the fixed noise level that validation, refits and held-out scores use.
"""

from dataclasses import dataclass

import numpy as np

from data_pipeline.degrade import crop_to_multiple, get_degradation
from data_pipeline.noise import DEFAULT_ESTIMATOR, fixed_noise
from models.grid import Factors, Grid, as_factors, factors_text


@dataclass(frozen=True)
class Acquisition:
    degradation: str = "gaussian"
    scale_factor: Factors = (2, 2, 2)
    thickness: float = 1.0  # thick_slice: the profile's FWHM over the slice spacing
    noise: tuple[float, float] = (0.0, 0.0)  # training: a level per patch from this range (x foreground mean)
    val_noise: float = 0.0  # validation and held-out scores: this level, fixed noise
    noise_free_fraction: float = 0.0  # training: this share of the patches gets no noise
    noise_estimator: str = DEFAULT_ESTIMATOR  # how a scan's sigma is read for the model (data_pipeline/noise.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_factor", as_factors(self.scale_factor))
        object.__setattr__(self, "noise", tuple(float(n) for n in self.noise))

    @property
    def grid(self) -> Grid:
        return get_degradation(self.degradation).grid

    def simulate(self, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(HR cropped to a multiple of the factors, its noise-free LR)."""
        hr = crop_to_multiple(hr, self.scale_factor)
        return hr, get_degradation(self.degradation)(hr, self.scale_factor, self.thickness)

    def with_validation_noise(self, lr: np.ndarray, source: str) -> np.ndarray:
        """The LR with this acquisition's fixed validation noise (the same for the same volume)."""
        return fixed_noise(lr, self.val_noise, source)[0]

    def describe(self) -> str:
        """One line: "gaussian x2, noise 0-6 % (validation 3 %)"."""
        parts = [f"{self.degradation} {factors_text(self.scale_factor)}"]
        if self.degradation == "thick_slice" and self.thickness != 1.0:
            parts[0] += f" (slice FWHM {self.thickness:g} x spacing)"
        if self.noise[1] > 0 or self.val_noise > 0:
            parts.append(f"Rician noise {100 * self.noise[0]:g}-{100 * self.noise[1]:g} % of the foreground mean"
                         f" on {1 - self.noise_free_fraction:.0%} of the training patches (validation {100 * self.val_noise:g} %)")
        else:
            parts.append("no noise")
        return ", ".join(parts)

    def key(self) -> tuple:
        """What must match for two models' held-out scores to be compared."""
        return (self.degradation, self.scale_factor, self.thickness, self.val_noise)
