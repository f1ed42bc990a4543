"""Augmented patch pairs stay exact pairs, on both grid conventions; off, nothing changes."""

import numpy as np
import pytest

from data_pipeline.augment import Augment
from data_pipeline.patches import PatchSampler
from hpo.config import Config

RNG = np.random.default_rng(0)
HR = RNG.random((40, 40, 40)).astype(np.float32)  # noise: any misalignment shows


def corner_pair() -> PatchSampler:
    """LR voxel m is HR voxel 2m (the "corner" grid, without blur: the pairing is all that is tested)."""
    return PatchSampler(HR[::2, ::2, ::2].copy(), HR, 2, 6, foreground_fraction=0.0)


def centre_pair() -> PatchSampler:
    """LR voxel m is the mean of HR voxels 2m, 2m+1 (the "centre" grid: blockmean)."""
    return PatchSampler(HR.reshape(20, 2, 20, 2, 20, 2).mean(axis=(1, 3, 5)), HR, 2, 6, foreground_fraction=0.0)


def blockmean(hr: np.ndarray) -> np.ndarray:
    n = hr.shape[0]
    return hr.reshape(n, 1, 6, 2, 6, 2, 6, 2).mean(axis=(3, 5, 7))


@pytest.mark.parametrize("augment", [Augment(flips=True), Augment(flips=True, gamma=0.4, scale=0.3)])
def test_flipped_and_permuted_pairs_stay_pairs_on_either_grid(augment):
    lr, hr = corner_pair().sample(300, np.random.default_rng(1), augment, "corner")
    np.testing.assert_array_equal(lr, hr[:, :, ::2, ::2, ::2])
    lr, hr = centre_pair().sample(300, np.random.default_rng(1), augment, "centre")
    if augment.gamma == 0:  # gamma does not commute with a block mean; flips and scale do
        np.testing.assert_allclose(lr, blockmean(hr), atol=1e-6)
    # Cut as if the grid were the other one, the pairs come apart: the grid matters.
    lr, hr = centre_pair().sample(300, np.random.default_rng(1), Augment(flips=True), "corner")
    assert np.abs(lr - blockmean(hr)).max() > 0.1


def test_orientations_and_intensities_vary():
    plain_lr, _ = corner_pair().sample(300, np.random.default_rng(1))
    lr, _ = corner_pair().sample(300, np.random.default_rng(1), Augment(flips=True), "corner")
    same = [any(np.array_equal(a, b) for b in plain_lr) for a in lr[:50]]
    assert sum(same) < 10  # most patches are a new orientation of a new draw
    scaled, _ = corner_pair().sample(300, np.random.default_rng(1), Augment(scale=0.3), "corner")
    ratio = scaled.mean(axis=(1, 2, 3, 4)) / plain_lr.mean(axis=(1, 2, 3, 4))
    assert 0.7 <= ratio.min() < 0.85 and 1.15 < ratio.max() <= 1.3


def test_augmentation_off_leaves_the_patch_stream_unchanged():
    a = corner_pair().sample(50, np.random.default_rng(3))
    b = corner_pair().sample(50, np.random.default_rng(3), Augment(), "corner")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_augmentation_is_config_and_checked():
    config = Config().override({"data.augment_flips": "true", "data.augment_gamma": "0.3"})
    assert config.patch_spec().augment == Augment(True, 0.3, 0.0)
    with pytest.raises(ValueError, match="augment_gamma"):
        Config().override({"data.augment_gamma": 2.0})
