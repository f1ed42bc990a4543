import numpy as np
import pytest

from data_pipeline.intensity import foreground
from data_pipeline.patches import PatchSampler
from tests.conftest import blob


@pytest.mark.parametrize("s", [2, 4])
def test_pairs_are_aligned_and_inside_the_region(s):
    hr = np.random.default_rng(0).random((8 * s, 12 * s, 10 * s), dtype=np.float32)
    lr = hr[::s, ::s, ::s].copy()  # decimation only: LR voxel m is HR voxel s*m
    region = ((0, 8), (2, 9), (1, 10))
    sampler = PatchSampler(lr, hr, s, patch_size=4, region=region, foreground_fraction=0.5)
    lr_p, hr_p = sampler.sample(32, np.random.default_rng(1))
    assert lr_p.shape == (32, 1, 4, 4, 4) and hr_p.shape == (32, 1, 4 * s, 4 * s, 4 * s)
    assert np.array_equal(hr_p[:, :, ::s, ::s, ::s], lr_p)
    corners = sampler.corners(500, np.random.default_rng(2))
    assert (corners >= [0, 2, 1]).all() and (corners + 4 <= [8, 9, 10]).all()


def test_patches_are_biased_towards_brain():
    hr = blob((48, 48, 48))
    lr = hr[::2, ::2, ::2].copy()
    sampler = PatchSampler(lr, hr, 2, patch_size=4, foreground_fraction=1.0)
    mask = foreground(lr)
    corners = sampler.corners(200, np.random.default_rng(0))
    on_brain = np.mean([mask[tuple(c + 2)] for c in corners])
    anywhere = PatchSampler(lr, hr, 2, patch_size=4, foreground_fraction=0.0).corners(200, np.random.default_rng(0))
    assert on_brain > 0.9 > np.mean([mask[tuple(c + 2)] for c in anywhere])


def test_region_smaller_than_a_patch():
    with pytest.raises(ValueError, match="smaller than one patch"):
        PatchSampler(np.zeros((8, 8, 8)), np.zeros((16, 16, 16)), 2, 4, region=((0, 8), (0, 3), (0, 8)))
