"""Training-patch augmentation: orientations and intensities a single template never shows.

Every transform is applied to the LR patch and its HR patch alike, and keeps them a valid pair:
- flips and axis permutations (48 orientations): the degradations blur isotropically, so a flipped
  or transposed pair is the pair of the flipped or transposed volume. On the "corner" grid (LR
  voxel m on HR voxel s*m) a flipped HR patch is cut s-1 voxels earlier so that LR voxels still sit
  on HR voxels (`PatchSampler.sample`); on the "centre" grid it is the plain mirror image.
- intensity scale, a factor from [1 - scale, 1 + scale]: exact, since every degradation is linear.
- gamma, x -> x ** g with log g uniform in [-gamma, gamma] (sign kept): applied to both patches, an
  approximation (the LR of the gamma-mapped HR is not the gamma-mapped LR), first order exact
  where the image varies slowly, which is where blur leaves it.
Nothing is drawn from the random stream when augmentation is off: the patches stay the same.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augment:
    flips: bool = False  # random flips and axis permutations of each pair
    gamma: float = 0.0  # largest |log gamma|; 0: none
    scale: float = 0.0  # largest relative intensity change; 0: none

    def __bool__(self) -> bool:
        return self.flips or self.gamma > 0 or self.scale > 0

    def orientations(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(count, 3) bool flips and (count, 3) axis orders; identity when flips are off."""
        if not self.flips:
            return np.zeros((count, 3), bool), np.tile(np.arange(3), (count, 1))
        return rng.random((count, 3)) < 0.5, np.argsort(rng.random((count, 3)), axis=1)

    def intensities(self, lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Per-patch gamma, then scale, on (N, 1, ...) LR and HR batches."""
        n = len(lr)
        shape = (n,) + (1,) * (lr.ndim - 1)
        if self.gamma > 0:
            g = np.exp(rng.uniform(-self.gamma, self.gamma, n)).reshape(shape).astype(np.float32)
            lr, hr = (np.sign(x) * np.abs(x) ** g for x in (lr, hr))
        if self.scale > 0:
            k = rng.uniform(1 - self.scale, 1 + self.scale, n).reshape(shape).astype(np.float32)
            lr, hr = lr * k, hr * k
        return lr.astype(np.float32, copy=False), hr.astype(np.float32, copy=False)
