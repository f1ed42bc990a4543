"""Cutting aligned (LR, HR) patch pairs, biased towards brain rather than empty background."""

import numpy as np

from data_pipeline.augment import Augment

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # LR [start, stop) per axis


def full_region(shape: tuple[int, ...]) -> Region:
    return tuple((0, n) for n in shape)  # type: ignore[return-value]


def foreground(volume: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Voxels brighter than `fraction` of the volume's high percentile: brain, not background."""
    return volume > fraction * np.percentile(volume, 99.5)


class PatchSampler:
    """Draws pairs of an LR cube of side `patch_size` lying inside `region` and its HR cube.

    LR patch [a, a+p) pairs with HR patch [s*a, s*a + s*p) on both grid conventions. A fraction
    `foreground_fraction` of the patches is centred on a foreground voxel, the rest anywhere.
    """

    def __init__(
        self,
        lr: np.ndarray,
        hr: np.ndarray,
        scale_factor: int,
        patch_size: int,
        region: Region | None = None,
        foreground_fraction: float = 0.9,
    ) -> None:
        s, p = scale_factor, patch_size
        if hr.shape != tuple(s * n for n in lr.shape):
            raise ValueError(f"HR shape {hr.shape} is not {s} x LR shape {lr.shape}")
        region = region or full_region(lr.shape)
        self.lo = np.array([r[0] for r in region])
        self.hi = np.array([r[1] for r in region]) - p  # last valid corner, inclusive
        if (self.hi < self.lo).any():
            raise ValueError(f"region {region} is smaller than one patch of {p}^3")
        sub = tuple(slice(a, b) for a, b in region)
        self.centres = np.argwhere(foreground(lr)[sub]) + self.lo
        self.lr, self.hr, self.s, self.p = lr, hr, s, p
        self.foreground_fraction = foreground_fraction

    def corners(self, count: int, rng: np.random.Generator) -> np.ndarray:
        on_brain = rng.random(count) < self.foreground_fraction if len(self.centres) else np.zeros(count, bool)
        picked = self.centres[rng.integers(len(self.centres), size=count)] - self.p // 2 if len(self.centres) else 0
        anywhere = rng.integers(self.lo, self.hi + 1, size=(count, 3))
        return np.where(on_brain[:, None], np.clip(picked, self.lo, self.hi), anywhere)

    def sample(
        self, count: int, rng: np.random.Generator, augment: Augment | None = None, grid: str = "corner"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(count, 1, p, p, p) LR and (count, 1, sp, sp, sp) HR float32 patches, augmented if asked.

        `grid`, the degradation's convention, matters only to flips (data_pipeline/augment.py).
        """
        s, p = self.s, self.p
        corners = self.corners(count, rng)
        if not augment:
            lr = np.stack([self.lr[x : x + p, y : y + p, z : z + p] for x, y, z in corners])
            hr = np.stack([self.hr[s * x : s * (x + p), s * y : s * (y + p), s * z : s * (z + p)] for x, y, z in corners])
            return lr[:, None].astype(np.float32, copy=False), hr[:, None].astype(np.float32, copy=False)
        flips, orders = augment.orientations(count, rng)
        # Corner grid: a flipped HR patch starts s-1 voxels early, which an LR corner at 0 cannot give.
        shift = s - 1 if grid == "corner" else 0
        flips &= (corners >= 1) | (shift == 0)
        lrs, hrs = [], []
        for corner, flip, order in zip(corners, flips, orders):
            lr_cut = tuple(slice(a + p - 1, a - 1 if a else None, -1) if f else slice(a, a + p) for a, f in zip(corner, flip))
            hr_cut = tuple(
                slice(s * (a + p) - shift - 1, s * a - shift - 1 if s * a - shift else None, -1) if f
                else slice(s * a, s * (a + p))
                for a, f in zip(corner, flip)
            )
            lrs.append(self.lr[lr_cut].transpose(order))
            hrs.append(self.hr[hr_cut].transpose(order))
        lr, hr = np.stack(lrs)[:, None].astype(np.float32), np.stack(hrs)[:, None].astype(np.float32)
        return augment.intensities(lr, hr, rng)
