"""The 3D SRResNet-style generator of Sánchez & Vilaplana (MIDL 2018), with switchable modern parts."""

import torch
import torch.nn.functional as F
from torch import nn

from models.grid import Factors, Grid, as_factors
from models.spline import upsample_cubic
from models.upsample import make_upsampler, upsampling_stages

SKIPS = ("cubic", "linear", "none")


def upsample_linear(x: torch.Tensor, scale_factor: int | Factors, grid: Grid) -> torch.Tensor:
    """Trilinear upsampling that honours the grid convention of the degradation (docs/protocol.md).

    "centre": LR voxel m sits at HR position s*m + (s-1)/2, which is `align_corners=False`.
    "corner": LR voxel m sits at HR position s*m; HR voxel j reads LR coordinate j/s, and the last s-1
    HR voxels, past the last LR centre, repeat the edge.
    """
    s = as_factors(scale_factor)
    if grid == "centre":
        return F.interpolate(x, scale_factor=s, mode="trilinear", align_corners=False)
    if grid == "corner":
        shape = x.shape[-3:]
        padded = F.pad(x, (0, 1, 0, 1, 0, 1), mode="replicate")
        # Size n+1 -> s*n+1 with align_corners=True maps output j to input j/s exactly.
        up = F.interpolate(padded, size=tuple(f * n + 1 for f, n in zip(s, shape)), mode="trilinear", align_corners=True)
        return up[..., : s[0] * shape[0], : s[1] * shape[1], : s[2] * shape[2]]
    raise ValueError(f"unknown grid convention {grid!r}; choose 'corner' or 'centre'")


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        norm = (lambda: nn.BatchNorm3d(channels)) if batch_norm else nn.Identity
        self.body = nn.Sequential(
            nn.Conv3d(channels, channels, 3, padding=1, bias=not batch_norm),
            norm(),
            nn.LeakyReLU(0.2),
            nn.Conv3d(channels, channels, 3, padding=1, bias=not batch_norm),
            norm(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator3D(nn.Module):
    """Head conv, residual trunk with a long skip, upsampling stages (`upsampling_stages`), output conv.

    `batch_norm=True, global_skip="none"` is the seed's layout. The defaults drop batch norm (it hurts
    regression at small batch sizes) and add the cubic B-spline upsampled input to the output, with
    the output conv starting at zero, so an untrained generator already equals the baseline it must
    beat and training only has to learn the residual detail.

    `noise_map=True` conditions the generator on the noise level, as FFDNet does: the input has a
    second channel holding the noise level (models/conditioning.py), the image is channel 0, and the
    skip and the output are one channel. A model that knows how noisy its input is can denoise a
    noisy scan without also smoothing a clean one.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        num_blocks: int = 6,
        scale_factor: int | Factors = 2,
        upsampler: str = "subpixel_icnr",
        batch_norm: bool = False,
        global_skip: str | bool = "cubic",
        grid: Grid = "corner",
        noise_map: bool = False,
    ) -> None:
        super().__init__()
        factors = as_factors(scale_factor)
        if isinstance(global_skip, bool):  # checkpoints written before the skip had a choice
            global_skip = "linear" if global_skip else "none"
        if global_skip not in SKIPS:
            raise ValueError(f"global_skip must be one of {', '.join(SKIPS)}, got {global_skip!r}")
        self.scale_factor = factors
        self.global_skip = global_skip
        self.grid = grid
        self.noise_map = noise_map
        f = base_channels
        self.head = nn.Sequential(nn.Conv3d(in_channels + noise_map, f, 3, padding=1), nn.LeakyReLU(0.2))
        self.trunk = nn.Sequential(
            *(ResidualBlock(f, batch_norm) for _ in range(num_blocks)),
            nn.Conv3d(f, f, 3, padding=1, bias=not batch_norm),
            nn.BatchNorm3d(f) if batch_norm else nn.Identity(),
        )
        self.upsample = nn.Sequential(
            *(
                nn.Sequential(make_upsampler(upsampler, f, stage), nn.LeakyReLU(0.2))
                for stage in upsampling_stages(factors)
            )
        )
        self.tail = nn.Conv3d(f, in_channels, 3, padding=1)
        if global_skip != "none":
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C + noise_map, D, H, W) -> (B, C, a*D, b*H, c*W)
        features = self.head(x)
        features = features + self.trunk(features)
        out = self.tail(self.upsample(features))
        image = x[:, : out.shape[1]]  # the noise map is no image to upsample
        if self.global_skip == "cubic":
            out = out + upsample_cubic(image, self.scale_factor, self.grid)
        elif self.global_skip == "linear":
            out = out + upsample_linear(image, self.scale_factor, self.grid)
        return out
