import numpy as np
import pytest
import torch
from scipy import ndimage

from data_pipeline.interpolate import interpolate
from models.spline import phase_kernels, upsample_cubic


@pytest.mark.parametrize("grid", ["corner", "centre"])
@pytest.mark.parametrize("s", [2, 4])
def test_matches_the_cubic_b_spline_baseline(grid, s):
    # The generator's skip must be exactly the baseline it is measured against (scipy, order 3).
    lr = ndimage.gaussian_filter(np.random.default_rng(s).random((14, 12, 10)), 1.0).astype(np.float32)
    ours = upsample_cubic(torch.from_numpy(lr)[None, None], s, grid)[0, 0].numpy()
    reference = interpolate(lr, s, grid, "cubic")
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 5e-5


@pytest.mark.parametrize("grid", ["corner", "centre"])
def test_constants_stay_constant_and_batches_stay_apart(grid):
    x = torch.stack([torch.full((1, 4, 5, 6), 0.25), torch.full((1, 4, 5, 6), 2.0)])
    out = upsample_cubic(x, 2, grid)
    assert out.shape == (2, 1, 8, 10, 12)
    assert torch.allclose(out[0], torch.tensor(0.25)) and torch.allclose(out[1], torch.tensor(2.0))


def test_corner_grid_keeps_the_lr_samples():
    # On the corner grid every s-th HR voxel sits on an LR voxel: interpolation must pass through it.
    lr = torch.rand(1, 1, 7, 7, 7)
    assert torch.allclose(upsample_cubic(lr, 2, "corner")[..., ::2, ::2, ::2], lr, atol=1e-4)
    assert np.allclose(phase_kernels(2, "corner").sum(axis=1), 1.0)


@pytest.mark.parametrize("grid", ["corner", "centre"])
@pytest.mark.parametrize("factors", [(1, 1, 4), (2, 2, 3), (3, 1, 2)])
def test_per_axis_skip_matches_the_per_axis_baseline(grid, factors):
    lr = ndimage.gaussian_filter(np.random.default_rng(1).random((14, 12, 10)), 1.0).astype(np.float32)
    ours = upsample_cubic(torch.from_numpy(lr)[None, None], factors, grid)[0, 0].numpy()
    reference = interpolate(lr, factors, grid, "cubic")
    assert ours.shape == tuple(f * n for f, n in zip(factors, lr.shape))
    assert np.abs(ours - reference).max() < 5e-5


@pytest.mark.parametrize("grid", ["corner", "centre"])
def test_equal_factors_per_axis_are_the_isotropic_skip(grid):
    lr = torch.rand(1, 1, 6, 7, 5)
    assert torch.equal(upsample_cubic(lr, (2, 2, 2), grid), upsample_cubic(lr, 2, grid))
    # Axes of factor 1 are left as they are: on the corner grid every other slice is the LR slice.
    thick = upsample_cubic(lr, (1, 1, 2), grid)
    assert thick.shape == (1, 1, 6, 7, 10)
    if grid == "corner":
        assert torch.allclose(thick[..., ::2], lr, atol=1e-4)
