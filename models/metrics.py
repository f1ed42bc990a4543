"""PSNR and 3D SSIM as PROTOCOL.md defines them: volumes in [0, 1] (R = 1), optional brain mask."""

import torch
from monai.metrics.regression import compute_ssim_and_cs

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def psnr(sr: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor | None = None, data_range: float = 1.0) -> float:
    """10 log10(R^2 / MSE) over the whole volume, or over the voxels where `mask` is true."""
    if sr.shape != hr.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(sr.shape)} vs {tuple(hr.shape)}")
    err = (sr.double() - hr.double()) ** 2
    mse = err[mask.bool()].mean() if mask is not None else err.mean()
    return float(10 * torch.log10(data_range**2 / mse.clamp_min(1e-20)))


def ssim(sr: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor | None = None, data_range: float = 1.0) -> float:
    """Mean 3D SSIM (Wang et al. 2004; Gaussian window 11^3, sigma 1.5, K1 0.01, K2 0.03).

    Takes (D, H, W) volumes. The SSIM map (MONAI's) covers the voxels whose whole window lies inside
    the volume; with a mask, the mean is over the masked voxels of that region.
    """
    if sr.shape != hr.shape or sr.dim() != 3:
        raise ValueError(f"ssim: wants two (D, H, W) volumes of one shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    ssim_map, _ = compute_ssim_and_cs(
        sr[None, None].float(),
        hr[None, None].float(),
        spatial_dims=3,
        kernel_size=[SSIM_WINDOW] * 3,
        kernel_sigma=[SSIM_SIGMA] * 3,
        data_range=data_range,
    )
    ssim_map = ssim_map[0, 0]  # (D-10, H-10, W-10)
    if mask is None:
        return float(ssim_map.mean())
    r = SSIM_WINDOW // 2
    inner = mask.bool()[r:-r, r:-r, r:-r]
    return float(ssim_map[inner].mean())
