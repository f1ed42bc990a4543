"""Cubic B-spline upsampling by an integer factor, in torch, as separable fixed convolutions.

Cubic B-spline interpolation is the baseline every model must beat (docs/protocol.md). As the generator's
global skip it makes an untrained generator equal that baseline, so training starts from it rather
than from linear interpolation, about 1 dB below.

Interpolation = a prefilter that turns samples into spline coefficients (the inverse of the sampled
B-spline [1, 4, 1] / 6, an infinite two-sided filter whose impulse response is sqrt(3) * z^|k| with
z = sqrt(3) - 2; cut at RADIUS taps, where |z|^RADIUS < 3e-5) and the B-spline evaluated at each
output phase. Both are linear, so one FIR kernel per phase does both; each axis is a conv3d with one
output channel per phase, then the phases are interleaved.
"""

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from models.grid import Factors, Grid, as_factors, lr_offset

RADIUS = 8


def bspline3(x: np.ndarray) -> np.ndarray:
    """The centred cubic B-spline, support (-2, 2)."""
    a = np.abs(x)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


@lru_cache
def phase_kernels(scale_factor: int, grid: Grid) -> np.ndarray:
    """(s, 2 * (RADIUS + 2) + 1): HR voxel s*m + p = sum over t of kernel[p, t] * LR[m + t - RADIUS - 2]."""
    z = math.sqrt(3) - 2
    j = np.arange(-RADIUS, RADIUS + 1)
    prefilter = math.sqrt(3) * z ** np.abs(j)
    reach = RADIUS + 2
    kernels = np.zeros((scale_factor, 2 * reach + 1))
    for p in range(scale_factor):
        delta = p / scale_factor + lr_offset(scale_factor, grid)  # LR position of phase p, relative to m
        for n in range(math.floor(delta) - 1, math.floor(delta) + 3):  # the B-spline's support
            weight = bspline3(np.array(delta - n))
            kernels[p, n - j + reach] += weight * prefilter  # coefficient n needs LR sample m + n - j
    return kernels / kernels.sum(axis=1, keepdims=True)  # the cut prefilter must still keep constants


def upsample_cubic(x: torch.Tensor, scale_factor: int | Factors, grid: Grid) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, C, aD, bH, cW) for factors (a, b, c); matches scipy's order-3 spline
    away from the edges. An axis of factor 1 is left as it is."""
    b, c = x.shape[:2]
    out = x.reshape(b * c, 1, *x.shape[2:])
    for axis, s in enumerate(as_factors(scale_factor)):
        if s > 1:
            kernels = torch.as_tensor(phase_kernels(s, grid), dtype=x.dtype, device=x.device)
            out = _upsample_axis(out, kernels, axis)
    return out.reshape(b, c, *out.shape[2:])


def _upsample_axis(x: torch.Tensor, kernels: torch.Tensor, axis: int) -> torch.Tensor:
    # x: (N, 1, D, H, W) -> s times longer along spatial `axis` (0, 1, 2)
    phases, taps = kernels.shape
    shape = [1, 1, 1]
    shape[axis] = taps
    pad = [0] * 6  # F.pad lists the last dimension first
    pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = taps // 2
    y = F.conv3d(F.pad(x, pad, mode="replicate"), kernels.reshape(phases, 1, *shape))  # (N, s, D, H, W)
    dim = 2 + axis
    return y.unsqueeze(1).movedim(2, dim + 1).flatten(dim, dim + 1)
