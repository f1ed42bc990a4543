"""Whole-volume super-resolution: overlapping windows blended with a Gaussian (MONAI's inferer)."""

import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from torch import nn

from models.grid import Factors, as_factors, lr_offset

# Weight left on a window's extrapolated HR voxels: small, but not zero, because at the volume's far
# faces no other window covers them.
EXTRAPOLATED_WEIGHT = 1e-3


def window_weights(roi_size: int | tuple[int, int, int], scale_factor: int | Factors, grid: str) -> torch.Tensor:
    """(1, 1, aRx, bRy, cRz) blending weights of one output window, for factors (a, b, c).

    A Gaussian, as MONAI's "gaussian" mode, but built at the output resolution, so that the HR
    voxels of a window that lie outside its outermost LR voxel centres (the last s-1 on the "corner"
    grid, about s/2 at each face on the "centre" grid) get almost no weight: the generator can only
    extrapolate them, and the neighbouring window, which sees both sides, decides them instead.
    """
    factors = as_factors(scale_factor)
    roi = (roi_size,) * 3 if isinstance(roi_size, int) else tuple(roi_size)
    weights = compute_importance_map(tuple(s * r for s, r in zip(factors, roi)), mode="gaussian", sigma_scale=0.125, device="cpu")
    for axis, (s, r) in enumerate(zip(factors, roi)):
        lr_coordinate = torch.arange(s * r) / s + lr_offset(s, grid)  # where each HR voxel reads the LR window
        outside = (lr_coordinate < 0) | (lr_coordinate > r - 1)
        shape = [1, 1, 1]
        shape[axis] = s * r
        weights = weights * torch.where(outside, EXTRAPOLATED_WEIGHT, 1.0).reshape(shape)
    return weights[None, None]


@torch.no_grad()
def sliding_window_superresolve(
    generator: nn.Module,
    lr: torch.Tensor,
    scale_factor: int | Factors,
    grid: str,
    roi_size: int | tuple[int, int, int] = 32,
    batch_size: int = 4,
    overlap: float = 0.25,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """(1, C, X, Y, Z) LR on the CPU -> (1, 1, aX, bY, cZ) float32 on the CPU, for factors (a, b, c).

    C is 2 for a noise-conditioned generator (the image and its noise map, models/conditioning.py).

    Only `batch_size` windows live on `device` at a time, so device memory is bounded whatever the
    volume size; the full-size output is gathered on the CPU. Blending hides the seams where the
    generator sees zero padding at a window's faces.
    """
    device = torch.device(device)
    weights = window_weights(roi_size, scale_factor, grid).to(device)

    def predict(windows: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return generator(windows).float()

    def blend_weights(outputs, _windows, _lr_weights):
        return outputs, weights

    return sliding_window_inference(
        lr.float(),
        roi_size=roi_size,
        sw_batch_size=batch_size,
        predictor=predict,
        overlap=overlap,
        mode="constant",
        padding_mode="replicate",
        sw_device=device,
        device="cpu",
        progress=progress,
        process_fn=blend_weights,
    )
