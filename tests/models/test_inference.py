import pytest
import torch

from models.generator import Generator3D, upsample_linear
from models.inference import sliding_window_superresolve, window_weights


@pytest.mark.parametrize("grid", ["corner", "centre"])
@pytest.mark.parametrize("s", [2, 4])
def test_windows_blend_into_the_whole_volume_result(grid, s):
    # An untrained generator with a global skip is a pure interpolator, so stitching windows must
    # reproduce interpolating the whole volume at once, seams and window faces included.
    g = Generator3D(base_channels=4, num_blocks=1, scale_factor=s, grid=grid, global_skip="linear").eval()
    x = torch.rand(1, 1, 23, 30, 13)
    sr = sliding_window_superresolve(g, x, s, grid, roi_size=10, batch_size=3, overlap=0.3)
    assert sr.shape == (1, 1, 23 * s, 30 * s, 13 * s)
    assert (sr - upsample_linear(x, s, grid)).abs().max() < 5e-3


def test_extrapolated_voxels_get_almost_no_weight():
    w = window_weights(8, 2, "corner")[0, 0]
    assert w[-1, 8, 8] < 1e-3 * w[-2, 8, 8]
    centre = window_weights(8, 2, "centre")[0, 0]
    assert centre[0, 8, 8] < 1e-3 * centre[1, 8, 8] and centre[-1, 8, 8] < 1e-3 * centre[-2, 8, 8]


def test_a_box_shaped_window_covering_the_whole_input_is_one_exact_pass():
    # Validation blocks are boxes that fit in one window: no padding, and blending changes nothing.
    g = Generator3D(base_channels=4, num_blocks=1, scale_factor=2, grid="corner").eval()
    x = torch.rand(1, 1, 12, 9, 7)
    assert window_weights((12, 9, 7), 2, "corner").shape == (1, 1, 24, 18, 14)
    sr = sliding_window_superresolve(g, x, 2, "corner", roi_size=(12, 9, 7))
    with torch.no_grad():
        assert torch.allclose(sr, g(x), atol=1e-5)
