"""Cutting aligned (LR, HR) patch pairs, biased towards brain rather than empty background."""

import math

import numpy as np

from data_pipeline.augment import Augment
from data_pipeline.intensity import foreground
from data_pipeline.noise import foreground_mean, rician
from models.conditioning import model_input
from models.grid import Factors, as_factors

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # LR [start, stop) per axis
Shape = tuple[int, int, int]


def full_region(shape: tuple[int, ...]) -> Region:
    return tuple((0, n) for n in shape)  # type: ignore[return-value]


def lr_patch_shape(patch_size: int, scale_factor: int | Factors) -> Shape:
    """The LR patch for `patch_size` and the factors: about patch_size^3 LR voxels, shaped so that its
    HR patch is a cube (in HR voxels, so in millimetres for isotropic HR volumes).

    The HR side is the multiple of every factor nearest to patch_size x (a*b*c)^(1/3): x2 and
    patch_size 16 give 16^3 LR and 32^3 HR; (1, 1, 4) gives 24 x 24 x 6 LR and 24^3 HR.
    """
    s = as_factors(scale_factor)
    step = math.lcm(*s)
    side = max(step, step * round(patch_size * math.prod(s) ** (1 / 3) / step))
    return tuple(side // f for f in s)  # type: ignore[return-value]


class PatchSampler:
    """Draws pairs of an LR box of `patch_size` (a side, or three) lying inside `region` and its HR box.

    LR patch [a, a+p) pairs with HR patch [s*a, s*a + s*p) per axis on both grid conventions. A
    fraction `foreground_fraction` of the patches is centred on a foreground voxel, the rest anywhere.
    With a `noise` range (relative to the LR foreground's mean), each LR patch gets Rician noise of
    a level drawn from it, but for a `noise_free_fraction` of them, left clean so that the model
    keeps learning what clean input needs; with `noise_map`, the LR patches carry the noise level as a second
    channel (models/conditioning.py), combined with `sigma_floor`, what `estimate_sigma` finds in the
    noise-free LR (the anatomy's own fine detail reads as a little noise), so that the map means in
    training what it means when a scan's sigma is estimated.
    """

    def __init__(
        self,
        lr: np.ndarray,
        hr: np.ndarray,
        scale_factor: int | Factors,
        patch_size: int | Shape,
        region: Region | None = None,
        foreground_fraction: float = 0.9,
        noise: tuple[float, float] = (0.0, 0.0),
        noise_map: bool = False,
        noise_free_fraction: float = 0.0,
        sigma_floor: float = 0.0,
    ) -> None:
        s = np.array(as_factors(scale_factor))
        p = np.array((patch_size,) * 3 if isinstance(patch_size, int) else patch_size)
        if hr.shape != tuple(s * lr.shape):
            raise ValueError(f"HR shape {hr.shape} is not {tuple(s)} x LR shape {lr.shape}")
        region = region or full_region(lr.shape)
        self.lo = np.array([r[0] for r in region])
        self.hi = np.array([r[1] for r in region]) - p  # last valid corner, inclusive
        if (self.hi < self.lo).any():
            raise ValueError(f"region {region} is smaller than one patch of {tuple(p)} LR voxels")
        sub = tuple(slice(a, b) for a, b in region)
        self.centres = np.argwhere(foreground(lr)[sub]) + self.lo
        self.lr, self.hr, self.s, self.p = lr, hr, s, p
        self.foreground_fraction = foreground_fraction
        self.noise, self.noise_map, self.noise_free_fraction = noise, noise_map, noise_free_fraction
        self.signal_mean = foreground_mean(lr) if noise[1] > 0 else 0.0
        self.sigma_floor = sigma_floor

    def corners(self, count: int, rng: np.random.Generator) -> np.ndarray:
        on_brain = rng.random(count) < self.foreground_fraction if len(self.centres) else np.zeros(count, bool)
        picked = self.centres[rng.integers(len(self.centres), size=count)] - self.p // 2 if len(self.centres) else 0
        anywhere = rng.integers(self.lo, self.hi + 1, size=(count, 3))
        return np.where(on_brain[:, None], np.clip(picked, self.lo, self.hi), anywhere)

    def sample(
        self, count: int, rng: np.random.Generator, augment: Augment | None = None, grid: str = "corner"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(count, 1 or 2, p...) LR and (count, 1, s*p...) HR float32 patches, augmented and noisy if asked.

        `grid`, the degradation's convention, matters only to flips (data_pipeline/augment.py).
        """
        lr, hr = self._cut(count, rng, augment, grid)
        if self.noise[1] > 0:
            sigma = rng.uniform(*self.noise, count).astype(np.float32) * self.signal_mean
            if self.noise_free_fraction > 0:
                sigma[rng.random(count) < self.noise_free_fraction] = 0.0
            lr = rician(lr, sigma.reshape(-1, 1, 1, 1, 1), rng)
        else:
            sigma = np.zeros(count, np.float32)
        return (model_input(lr, np.hypot(sigma, self.sigma_floor)) if self.noise_map else lr), hr

    def _cut(self, count: int, rng: np.random.Generator, augment: Augment | None, grid: str) -> tuple[np.ndarray, np.ndarray]:
        s, p = self.s, self.p
        corners = self.corners(count, rng)
        if not augment:
            lr = np.stack([self.lr[tuple(slice(a, a + n) for a, n in zip(c, p))] for c in corners])
            hr = np.stack([self.hr[tuple(slice(f * a, f * (a + n)) for a, n, f in zip(c, p, s))] for c in corners])
            return lr[:, None].astype(np.float32, copy=False), hr[:, None].astype(np.float32, copy=False)
        flips, orders = augment.orientations(count, rng)
        if len(set(s)) > 1 or len(set(p)) > 1:
            orders[:] = np.arange(3)  # axes of different factors cannot trade places
        # Corner grid: a flipped HR patch starts s-1 voxels early, which an LR corner at 0 cannot give.
        shift = s - 1 if grid == "corner" else np.zeros(3, int)
        flips &= (corners >= 1) | (shift == 0)
        lrs, hrs = [], []
        for corner, flip, order in zip(corners, flips, orders):
            lr_cut = tuple(
                slice(a + n - 1, a - 1 if a else None, -1) if f else slice(a, a + n) for a, n, f in zip(corner, p, flip)
            )
            hr_cut = tuple(
                slice(k * (a + n) - d - 1, k * a - d - 1 if k * a - d else None, -1) if f
                else slice(k * a, k * (a + n))
                for a, n, f, k, d in zip(corner, p, flip, s, shift)
            )
            lrs.append(self.lr[lr_cut].transpose(order))
            hrs.append(self.hr[hr_cut].transpose(order))
        lr, hr = np.stack(lrs)[:, None].astype(np.float32), np.stack(hrs)[:, None].astype(np.float32)
        return augment.intensities(lr, hr, rng)
