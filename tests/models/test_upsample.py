import pytest
import torch
import torch.nn.functional as F

from models.upsample import ResizeConv, SubpixelConv, make_upsampler, voxel_shuffle, voxel_unshuffle


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
