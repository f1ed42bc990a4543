"""Cutting aligned (LR, HR) patch pairs, biased towards brain rather than empty background."""

import numpy as np

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

    def sample(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(count, 1, p, p, p) LR and (count, 1, sp, sp, sp) HR float32 patches."""
        s, p = self.s, self.p
        corners = self.corners(count, rng)
        lr = np.stack([self.lr[x : x + p, y : y + p, z : z + p] for x, y, z in corners])
        hr = np.stack([self.hr[s * x : s * (x + p), s * y : s * (y + p), s * z : s * (z + p)] for x, y, z in corners])
        return lr[:, None].astype(np.float32, copy=False), hr[:, None].astype(np.float32, copy=False)
