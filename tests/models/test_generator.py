import pytest
import torch

from models.checkpoint import load_generator, save_checkpoint
from models.generator import Generator3D, upsample_linear
from models.spline import upsample_cubic
from models.upsample import UPSAMPLERS


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
@pytest.mark.parametrize("s", [2, 4])
def test_output_shape_for_every_upsampler(upsampler, s):
    g = Generator3D(base_channels=4, num_blocks=1, scale_factor=s, upsampler=upsampler)
    assert g(torch.randn(2, 1, 6, 7, 5)).shape == (2, 1, 6 * s, 7 * s, 5 * s)


def test_seed_layout_batch_norm_without_global_skip():
    g = Generator3D(base_channels=4, num_blocks=2, batch_norm=True, global_skip="none", upsampler="subpixel")
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in g.modules())
    x = torch.randn(2, 1, 6, 6, 6)
    assert g(x).shape == (2, 1, 12, 12, 12)
    assert not torch.allclose(g(x), upsample_linear(x, 2, "corner"))


@pytest.mark.parametrize("grid", ["corner", "centre"])
@pytest.mark.parametrize(("skip", "interpolate"), [("cubic", upsample_cubic), ("linear", upsample_linear)])
def test_untrained_generator_is_the_interpolation_its_skip_names(grid, skip, interpolate):
    g = Generator3D(base_channels=4, num_blocks=1, grid=grid, global_skip=skip)
    x = torch.randn(1, 1, 5, 6, 7)
    assert torch.allclose(g(x), interpolate(x, 2, grid))
    assert not torch.allclose(g(x), (upsample_linear if skip == "cubic" else upsample_cubic)(x, 2, grid))


def test_the_default_skip_is_cubic_and_old_boolean_checkpoints_still_load(tmp_path):
    assert Generator3D(base_channels=4, num_blocks=1).global_skip == "cubic"
    for old, now in [(True, "linear"), (False, "none")]:
        kwargs = {"base_channels": 4, "num_blocks": 1, "global_skip": old}
        save_checkpoint(tmp_path / str(old), {"generator": kwargs}, {"generator": Generator3D(**kwargs).state_dict()})
        assert load_generator(tmp_path / str(old))[0].global_skip == now
    with pytest.raises(ValueError, match="global_skip"):
        Generator3D(global_skip="bicubic")


@pytest.mark.parametrize("s", [2, 4])
def test_upsample_linear_follows_the_grid_convention(s):
    n = 6
    ramp = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1, 1).expand(1, 1, n, 2, 2).contiguous()
    j = torch.arange(s * n, dtype=torch.float32)
    corner = upsample_linear(ramp, s, "corner")[0, 0, :, 0, 0]
    # Corner: HR voxel j reads LR coordinate j/s (clamped past the last LR centre).
    assert torch.allclose(corner, (j / s).clamp(max=n - 1))
    centre = upsample_linear(ramp, s, "centre")[0, 0, :, 0, 0]
    # Centre: HR voxel j reads LR coordinate (j - (s-1)/2)/s (clamped at both faces).
    assert torch.allclose(centre, ((j - (s - 1) / 2) / s).clamp(0, n - 1))


def test_rejects_factors_beyond_4():
    with pytest.raises(ValueError, match="scale factor"):
        Generator3D(scale_factor=5)


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
@pytest.mark.parametrize("factors", [(1, 1, 4), (2, 2, 3), 3])
def test_per_axis_factors_for_every_upsampler(upsampler, factors):
    g = Generator3D(base_channels=4, num_blocks=1, scale_factor=factors, upsampler=upsampler)
    a, b, c = (factors,) * 3 if isinstance(factors, int) else factors
    assert g(torch.randn(2, 1, 6, 7, 5)).shape == (2, 1, 6 * a, 7 * b, 5 * c)


@pytest.mark.parametrize("grid", ["corner", "centre"])
def test_noise_map_generator_upsamples_the_image_channel_only(grid):
    g = Generator3D(base_channels=4, num_blocks=1, grid=grid, scale_factor=(1, 1, 4), noise_map=True)
    image = torch.randn(1, 1, 5, 6, 7)
    x = torch.cat([image, torch.full_like(image, 0.5)], dim=1)
    out = g(x)
    assert out.shape == (1, 1, 5, 6, 28)
    assert torch.allclose(out, upsample_cubic(image, (1, 1, 4), grid))  # untrained: the skip alone
    assert g.head[0].in_channels == 2
