import math

import numpy as np
import pytest
import torch

from models.metrics import psnr, ssim


def test_psnr_of_a_known_error_and_inside_a_mask():
    hr = torch.zeros(4, 4, 4)
    sr = hr + 0.1  # MSE 0.01 -> 20 dB
    assert psnr(sr, hr) == pytest.approx(20.0)
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    mask[:2] = True
    sr2 = hr.clone()
    sr2[:2] = 0.01  # error only inside the mask: MSE 1e-4 there -> 40 dB
    assert psnr(sr2, hr, mask) == pytest.approx(40.0)
    assert psnr(sr2, hr) == pytest.approx(10 * math.log10(1 / 0.5e-4))


def test_ssim_is_one_for_identical_volumes_and_falls_with_noise():
    rng = np.random.default_rng(0)
    hr = torch.from_numpy(rng.random((20, 20, 20), dtype=np.float32))
    assert ssim(hr, hr) == pytest.approx(1.0, abs=1e-5)
    slightly, badly = hr + 0.02 * torch.randn_like(hr), hr + 0.3 * torch.randn_like(hr)
    assert 1.0 > ssim(slightly, hr) > ssim(badly, hr)


def test_ssim_matches_the_definition_on_constant_volumes():
    # Two constant volumes a and b: SSIM = (2ab + C1) / (a^2 + b^2 + C1) (the structure term is 1).
    a, b, c1 = 0.6, 0.4, 0.01**2
    value = ssim(torch.full((16, 16, 16), a), torch.full((16, 16, 16), b))
    # rel 5e-3: MONAI's float32 3D kernel sums to 1 + 7e-5, which the tiny C2 amplifies here.
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=5e-3)


def test_ssim_mask_selects_the_region():
    hr = torch.rand(24, 24, 24)
    sr = hr.clone()
    sr[12:] += 0.5 * torch.randn(12, 24, 24)
    mask = torch.zeros_like(hr, dtype=torch.bool)
    mask[:7] = True  # windows (radius 5) of these voxels stay clear of the noisy half
    assert ssim(sr, hr, mask) == pytest.approx(1.0, abs=1e-4)
    assert ssim(sr, hr) < 0.9


def test_ssim_is_monais_map_computed_one_axis_at_a_time():
    from monai.metrics.regression import compute_ssim_and_cs

    generator = torch.Generator().manual_seed(0)
    hr = torch.rand((30, 26, 22), generator=generator)
    sr = (hr + 0.1 * torch.randn(hr.shape, generator=generator)).clamp(0, 1)
    mask = hr > 0.4
    reference, _ = compute_ssim_and_cs(sr[None, None], hr[None, None], spatial_dims=3, kernel_size=[11] * 3,
                                       kernel_sigma=[1.5] * 3, data_range=1.0)
    inner = mask[5:-5, 5:-5, 5:-5]
    assert ssim(sr, hr) == pytest.approx(float(reference.mean()), abs=1e-5)
    assert ssim(sr, hr, mask) == pytest.approx(float(reference[0, 0][inner].mean()), abs=1e-5)
