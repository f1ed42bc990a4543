"""Simulating the low-resolution scan from the high-resolution one, with a factor per axis.

Each degradation declares its grid convention (docs/protocol.md): where LR voxel m sits on the HR
grid. A model trained on one degradation learns its convention, so the checkpoint records the name
and the super-resolved NIfTI header is derived from the convention. An axis of factor 1 is left as
it is by every degradation.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.grid import Factors, Grid, as_factors

FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


def crop_to_multiple(hr: np.ndarray, scale_factor: int | Factors) -> np.ndarray:
    """Drop the trailing voxels so that every axis is a multiple of its scale factor."""
    return hr[tuple(slice(0, n - n % s) for n, s in zip(hr.shape, as_factors(scale_factor)))]


def _gaussian(hr: np.ndarray, s: Factors, thickness: float) -> np.ndarray:
    # The seed's degradation: blur with sigma = 1 HR voxel, then keep every s-th voxel, on the axes
    # that are reduced.
    blurred = ndimage.gaussian_filter(hr, sigma=[1.0 if f > 1 else 0.0 for f in s], mode="nearest")
    return blurred[:: s[0], :: s[1], :: s[2]]


def _kspace(hr: np.ndarray, s: Factors, thickness: float) -> np.ndarray:
    # Keep the central n/s Fourier coefficients of each reduced axis: what a scanner acquiring a
    # smaller matrix over the same field of view measures. Sample m then sits at HR position s*m.
    spectrum = np.fft.fftshift(np.fft.fftn(hr))
    # After fftshift DC sits at n//2; ifftshift of the kept m coefficients expects it at m//2, so
    # the crop starts at n//2 - m//2 (with (n - m)//2 an odd m kept the wrong band).
    keep = tuple(slice(n // 2 - (n // f) // 2, n // 2 - (n // f) // 2 + n // f) for n, f in zip(hr.shape, s))
    cropped = np.fft.ifftshift(spectrum[keep])
    return (np.abs(np.fft.ifftn(cropped)) / math.prod(s)).astype(np.float32)


def _blockmean(hr: np.ndarray, s: Factors, thickness: float) -> np.ndarray:
    x, y, z = (n // f for n, f in zip(hr.shape, s))
    return hr.reshape(x, s[0], y, s[1], z, s[2]).mean(axis=(1, 3, 5))


def slice_profile_weights(n_hr: int, s: int, thickness: float) -> np.ndarray:
    """(n_hr // s, n_hr): row k integrates HR voxels under a Gaussian slice profile centred at HR
    position s*k + (s-1)/2 with FWHM = thickness * s HR voxels; beyond the volume the edge voxel
    repeats (as mode="nearest" filters do)."""
    sigma = thickness * s / FWHM_PER_SIGMA
    reach = int(math.ceil(4 * sigma)) + s
    weights = np.zeros((n_hr // s, n_hr))
    for k in range(n_hr // s):
        centre = s * k + (s - 1) / 2
        taps = np.arange(math.floor(centre) - reach, math.ceil(centre) + reach + 1)
        w = np.exp(-0.5 * ((taps - centre) / sigma) ** 2)
        np.add.at(weights[k], np.clip(taps, 0, n_hr - 1), w / w.sum())
    return weights


def _thick_slice(hr: np.ndarray, s: Factors, thickness: float) -> np.ndarray:
    # A 2D multi-slice acquisition: each LR voxel integrates the slice profile along every reduced
    # axis, centred on its slab ("centre" grid).
    out = hr
    for axis, f in enumerate(s):
        if f > 1:
            w = slice_profile_weights(out.shape[axis], f, thickness).astype(np.float32)
            out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return out


@dataclass(frozen=True)
class Degradation:
    name: str
    grid: Grid
    apply: Callable[[np.ndarray, Factors, float], np.ndarray]

    def __call__(self, hr: np.ndarray, scale_factor: int | Factors, thickness: float = 1.0) -> np.ndarray:
        """(X, Y, Z) HR, each axis a multiple of its factor -> (X/a, Y/b, Z/c) float32 LR.

        `thickness`: the slice profile's FWHM over the slice spacing (thick_slice only): 1 is
        contiguous slices, above 1 overlapping ones, below 1 a gap between them.
        """
        s = as_factors(scale_factor)
        if any(n % f for n, f in zip(hr.shape, s)):
            raise ValueError(f"HR shape {hr.shape} is not a multiple of {s}; crop_to_multiple first")
        return np.ascontiguousarray(self.apply(hr.astype(np.float32, copy=False), s, thickness), dtype=np.float32)


DEGRADATIONS: dict[str, Degradation] = {
    d.name: d
    for d in (
        Degradation("gaussian", "corner", _gaussian),
        Degradation("kspace", "corner", _kspace),
        Degradation("blockmean", "centre", _blockmean),
        Degradation("thick_slice", "centre", _thick_slice),
    )
}


def get_degradation(name: str) -> Degradation:
    try:
        return DEGRADATIONS[name]
    except KeyError:
        raise ValueError(f"unknown degradation {name!r}; choose one of {', '.join(DEGRADATIONS)}") from None
