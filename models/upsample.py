"""The three interchangeable x2 upsamplers of the generator, and the 3D voxel shuffle."""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

UpsamplerName = Literal["resize_conv", "subpixel", "subpixel_icnr"]
UPSAMPLERS: tuple[str, ...] = ("resize_conv", "subpixel", "subpixel_icnr")


def voxel_shuffle(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """(B, C*s^3, D, H, W) -> (B, C, s*D, s*H, s*W); channel c*s^3 + (i*s + j)*s + k fills offset (i, j, k)."""
    b, cs3, d, h, w = x.shape
    s = scale_factor
    if cs3 % s**3:
        raise ValueError(f"voxel_shuffle: {cs3} channels is not a multiple of {s}^3")
    c = cs3 // s**3
    x = x.view(b, c, s, s, s, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, C, D, s, H, s, W, s)
    return x.reshape(b, c, d * s, h * s, w * s)


def voxel_unshuffle(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """The inverse of `voxel_shuffle`: (B, C, s*D, s*H, s*W) -> (B, C*s^3, D, H, W)."""
    b, c, sd, sh, sw = x.shape
    s = scale_factor
    if sd % s or sh % s or sw % s:
        raise ValueError(f"voxel_unshuffle: spatial shape {(sd, sh, sw)} is not divisible by {s}")
    d, h, w = sd // s, sh // s, sw // s
    x = x.view(b, c, d, s, h, s, w, s)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, C, s, s, s, D, H, W)
    return x.reshape(b, c * s**3, d, h, w)


class ResizeConv(nn.Module):
    """Nearest-neighbour resize, then a 3^3 conv (Odena et al. 2016): no checkerboard by construction."""

    def __init__(self, channels: int, scale_factor: int = 2) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale_factor, mode="nearest"))


class SubpixelConv(nn.Module):
    """A 3^3 conv to C*s^3 channels, then a voxel shuffle (Shi et al. 2016, in 3D).

    With `icnr=True` the s^3 sub-kernels of each output channel start identical (Aitken et al. 2017),
    so at initialisation the layer equals a conv followed by nearest-neighbour upsampling.
    """

    def __init__(self, channels: int, scale_factor: int = 2, icnr: bool = False) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.conv = nn.Conv3d(channels, channels * scale_factor**3, 3, padding=1)
        if icnr:
            self.reset_icnr()

    @torch.no_grad()
    def reset_icnr(self) -> None:
        s3 = self.scale_factor**3
        out_channels, in_channels, *kernel = self.conv.weight.shape
        sub = torch.empty(out_channels // s3, in_channels, *kernel)
        nn.init.kaiming_normal_(sub, a=0.2, nonlinearity="leaky_relu")
        # voxel_shuffle reads channel c*s^3 + offset, so repeating each sub-kernel s^3 times in a row
        # gives every offset of output channel c the same weights.
        self.conv.weight.copy_(sub.repeat_interleave(s3, dim=0))
        self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return voxel_shuffle(self.conv(x), self.scale_factor)


def make_upsampler(name: str, channels: int, scale_factor: int = 2) -> nn.Module:
    if name == "resize_conv":
        return ResizeConv(channels, scale_factor)
    if name == "subpixel":
        return SubpixelConv(channels, scale_factor, icnr=False)
    if name == "subpixel_icnr":
        return SubpixelConv(channels, scale_factor, icnr=True)
    raise ValueError(f"unknown upsampler {name!r}; choose one of {', '.join(UPSAMPLERS)}")
