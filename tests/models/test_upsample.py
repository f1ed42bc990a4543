import pytest
import torch
import torch.nn.functional as F

from models.grid import as_factors
from models.upsample import (
    ResizeConv,
    SubpixelConv,
    make_upsampler,
    upsampling_stages,
    voxel_shuffle,
    voxel_unshuffle,
)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_voxel_unshuffle_inverts_voxel_shuffle(s):
    x = torch.randn(2, 3 * s**3, 4, 5, 3)
    y = voxel_shuffle(x, s)
    assert y.shape == (2, 3, 4 * s, 5 * s, 3 * s)
    assert torch.equal(voxel_unshuffle(y, s), x)
    hr = torch.randn(1, 2, 2 * s, 3 * s, 4 * s)
    assert torch.equal(voxel_shuffle(voxel_unshuffle(hr, s), s), hr)


def test_voxel_shuffle_places_each_channel_at_its_offset():
    s = 2
    x = torch.zeros(1, 8, 1, 1, 1)
    x[0, (1 * s + 0) * s + 1] = 7.0  # offset (i, j, k) = (1, 0, 1)
    y = voxel_shuffle(x, s)
    assert y[0, 0, 1, 0, 1] == 7.0 and y.sum() == 7.0


@pytest.mark.parametrize("s", [2, 4])
def test_icnr_subpixel_starts_as_nearest_neighbour_upsampling(s):
    torch.manual_seed(0)
    layer = SubpixelConv(4, s, icnr=True)
    x = torch.randn(2, 4, 5, 6, 3)
    y = layer(x)
    # Equal to a plain conv with one sub-kernel per output channel, then nearest-neighbour upsampling.
    s3 = s**3
    reference = F.conv3d(x, layer.conv.weight[::s3], layer.conv.bias[::s3], padding=1)
    assert torch.allclose(y, F.interpolate(reference, scale_factor=s, mode="nearest"), atol=1e-6)


def test_plain_subpixel_is_not_nearest_neighbour_at_init():
    torch.manual_seed(0)
    y = SubpixelConv(4, 2, icnr=False)(torch.randn(1, 4, 4, 4, 4))
    blocks_equal = torch.allclose(y, F.interpolate(y[..., ::2, ::2, ::2], scale_factor=2, mode="nearest"))
    assert not blocks_equal  # so the ICNR test above can fail


def test_resize_conv_shape_and_unknown_name():
    assert ResizeConv(3)(torch.randn(1, 3, 4, 5, 6)).shape == (1, 3, 8, 10, 12)
    with pytest.raises(ValueError, match="unknown upsampler"):
        make_upsampler("bicubic", 3)


@pytest.mark.parametrize("factors", [(1, 1, 4), (2, 2, 3), (3, 1, 2)])
def test_per_axis_voxel_shuffle_inverts_and_places_channels(factors):
    a, b, c = factors
    x = torch.randn(2, 3 * a * b * c, 4, 5, 3)
    y = voxel_shuffle(x, factors)
    assert y.shape == (2, 3, 4 * a, 5 * b, 3 * c)
    assert torch.equal(voxel_unshuffle(y, factors), x)
    # Channel C*abc + (i*b + j)*c + k fills offset (i, j, k), as the isotropic shuffle does.
    one = torch.zeros(1, a * b * c, 1, 1, 1)
    i, j, k = a - 1, b - 1, 0
    one[0, (i * b + j) * c + k] = 5.0
    assert voxel_shuffle(one, factors)[0, 0, i, j, k] == 5.0


@pytest.mark.parametrize("s", [2, 3])
def test_per_axis_shuffle_with_equal_factors_is_the_isotropic_one(s):
    x = torch.randn(1, 2 * s**3, 3, 4, 2)
    assert torch.equal(voxel_shuffle(x, (s, s, s)), voxel_shuffle(x, s))


@pytest.mark.parametrize("factors", [(1, 1, 4), (2, 2, 3), (2, 2, 2)])
def test_per_axis_icnr_starts_as_nearest_neighbour_upsampling(factors):
    torch.manual_seed(0)
    layer = SubpixelConv(4, factors, icnr=True)
    x = torch.randn(2, 4, 5, 6, 3)
    n = factors[0] * factors[1] * factors[2]
    reference = F.conv3d(x, layer.conv.weight[::n], layer.conv.bias[::n], padding=1)
    assert torch.allclose(layer(x), F.interpolate(reference, scale_factor=factors, mode="nearest"), atol=1e-6)


@pytest.mark.parametrize("factors, stages", [
    (2, [(2, 2, 2)]), (4, [(2, 2, 2), (2, 2, 2)]), ((1, 1, 4), [(1, 1, 2), (1, 1, 2)]), ((2, 2, 3), [(2, 2, 3)]),
    ((4, 1, 3), [(2, 1, 3), (2, 1, 1)]),
])
def test_upsampling_stages_multiply_to_the_factors(factors, stages):
    assert upsampling_stages(factors) == stages


@pytest.mark.parametrize("bad", [0, 5, (1, 1, 1), (2, 2), (1, 1, 8)])
def test_factors_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match="scale factor"):
        as_factors(bad)
