"""Simulating the low-resolution scan from the high-resolution one.

Each degradation declares its grid convention (PROTOCOL.md): where LR voxel m sits on the HR grid.
A model trained on one degradation learns its convention, so the checkpoint records the name and the
super-resolved NIfTI header is derived from the convention.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.grid import Grid


def crop_to_multiple(hr: np.ndarray, scale_factor: int) -> np.ndarray:
    """Drop the trailing voxels so that every axis is a multiple of the scale factor."""
    return hr[tuple(slice(0, n - n % scale_factor) for n in hr.shape)]


def _gaussian(hr: np.ndarray, s: int) -> np.ndarray:
    # The seed's degradation: blur with sigma = 1 HR voxel, then keep every s-th voxel.
    return ndimage.gaussian_filter(hr, sigma=1.0, mode="nearest")[::s, ::s, ::s]


def _kspace(hr: np.ndarray, s: int) -> np.ndarray:
    # Keep the central n/s Fourier coefficients of each axis: what a scanner acquiring a smaller
    # matrix over the same field of view measures. Sample m then sits at HR position s*m.
    spectrum = np.fft.fftshift(np.fft.fftn(hr))
    # After fftshift DC sits at n//2; ifftshift of the kept m coefficients expects it at m//2, so
    # the crop starts at n//2 - m//2 (with (n - m)//2 an odd m kept the wrong band).
    keep = tuple(slice(n // 2 - (n // s) // 2, n // 2 - (n // s) // 2 + n // s) for n in hr.shape)
    cropped = np.fft.ifftshift(spectrum[keep])
    return (np.abs(np.fft.ifftn(cropped)) / s**3).astype(np.float32)


def _blockmean(hr: np.ndarray, s: int) -> np.ndarray:
    x, y, z = (n // s for n in hr.shape)
    return hr.reshape(x, s, y, s, z, s).mean(axis=(1, 3, 5))


@dataclass(frozen=True)
class Degradation:
    name: str
    grid: Grid
    apply: Callable[[np.ndarray, int], np.ndarray]

    def __call__(self, hr: np.ndarray, scale_factor: int) -> np.ndarray:
        """(X, Y, Z) HR, each axis a multiple of s -> (X/s, Y/s, Z/s) float32 LR."""
        if any(n % scale_factor for n in hr.shape):
            raise ValueError(f"HR shape {hr.shape} is not a multiple of {scale_factor}; crop_to_multiple first")
        return np.ascontiguousarray(self.apply(hr.astype(np.float32, copy=False), scale_factor), dtype=np.float32)


DEGRADATIONS: dict[str, Degradation] = {
    d.name: d
    for d in (
        Degradation("gaussian", "corner", _gaussian),
        Degradation("kspace", "corner", _kspace),
        Degradation("blockmean", "centre", _blockmean),
    )
}


def get_degradation(name: str) -> Degradation:
    try:
        return DEGRADATIONS[name]
    except KeyError:
        raise ValueError(f"unknown degradation {name!r}; choose one of {', '.join(DEGRADATIONS)}") from None
