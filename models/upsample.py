"""The three interchangeable upsamplers of the generator, and the 3D voxel shuffle, per-axis factors."""

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.grid import Factors, as_factors

UpsamplerName = Literal["resize_conv", "subpixel", "subpixel_icnr"]
UPSAMPLERS: tuple[str, ...] = ("resize_conv", "subpixel", "subpixel_icnr")


def voxel_shuffle(x: torch.Tensor, scale_factor: int | Factors) -> torch.Tensor:
    """(B, C*a*b*c, D, H, W) -> (B, C, a*D, b*H, c*W) for factors (a, b, c).

    Channel C_i*a*b*c + (i*b + j)*c + k fills offset (i, j, k); with one factor s this is the
    isotropic shuffle of Shi et al. in 3D.
    """
    sa, sb, sc = as_factors(scale_factor)
    b, channels, d, h, w = x.shape
    n = sa * sb * sc
    if channels % n:
        raise ValueError(f"voxel_shuffle: {channels} channels is not a multiple of {sa}*{sb}*{sc}")
    x = x.view(b, channels // n, sa, sb, sc, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, C, D, a, H, b, W, c)
    return x.reshape(b, channels // n, d * sa, h * sb, w * sc)


def voxel_unshuffle(x: torch.Tensor, scale_factor: int | Factors) -> torch.Tensor:
    """The inverse of `voxel_shuffle`: (B, C, a*D, b*H, c*W) -> (B, C*a*b*c, D, H, W)."""
    sa, sb, sc = as_factors(scale_factor)
    b, c, sd, sh, sw = x.shape
    if sd % sa or sh % sb or sw % sc:
        raise ValueError(f"voxel_unshuffle: spatial shape {(sd, sh, sw)} is not divisible by {(sa, sb, sc)}")
    d, h, w = sd // sa, sh // sb, sw // sc
    x = x.view(b, c, d, sa, h, sb, w, sc)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, C, a, b, c, D, H, W)
    return x.reshape(b, c * sa * sb * sc, d, h, w)


class ResizeConv(nn.Module):
    """Nearest-neighbour resize, then a 3^3 conv (Odena et al. 2016): no checkerboard by construction."""

    def __init__(self, channels: int, scale_factor: int | Factors = 2) -> None:
        super().__init__()
        self.scale_factor = as_factors(scale_factor)
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale_factor, mode="nearest"))


class SubpixelConv(nn.Module):
    """A 3^3 conv to C*a*b*c channels, then a voxel shuffle (Shi et al. 2016, in 3D, per-axis factors).

    With `icnr=True` the a*b*c sub-kernels of each output channel start identical (Aitken et al. 2017),
    so at initialisation the layer equals a conv followed by nearest-neighbour upsampling.
    """

    def __init__(self, channels: int, scale_factor: int | Factors = 2, icnr: bool = False) -> None:
        super().__init__()
        self.scale_factor = as_factors(scale_factor)
        self.conv = nn.Conv3d(channels, channels * math.prod(self.scale_factor), 3, padding=1)
        if icnr:
            self.reset_icnr()

    @torch.no_grad()
    def reset_icnr(self) -> None:
        n = math.prod(self.scale_factor)
        out_channels, in_channels, *kernel = self.conv.weight.shape
        sub = torch.empty(out_channels // n, in_channels, *kernel)
        nn.init.kaiming_normal_(sub, a=0.2, nonlinearity="leaky_relu")
        # voxel_shuffle reads channel c*n + offset, so repeating each sub-kernel n times in a row
        # gives every offset of output channel c the same weights.
        self.conv.weight.copy_(sub.repeat_interleave(n, dim=0))
        self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return voxel_shuffle(self.conv(x), self.scale_factor)


def make_upsampler(name: str, channels: int, scale_factor: int | Factors = 2) -> nn.Module:
    if name == "resize_conv":
        return ResizeConv(channels, scale_factor)
    if name == "subpixel":
        return SubpixelConv(channels, scale_factor, icnr=False)
    if name == "subpixel_icnr":
        return SubpixelConv(channels, scale_factor, icnr=True)
    raise ValueError(f"unknown upsampler {name!r}; choose one of {', '.join(UPSAMPLERS)}")


def upsampling_stages(scale_factor: int | Factors) -> list[Factors]:
    """The generator's upsampling stages: each axis's factor split into prime steps (4 = 2 x 2),
    the k-th step of every axis in stage k (an axis with fewer steps takes 1 there).

    x2 -> [(2, 2, 2)]; x4 -> [(2, 2, 2), (2, 2, 2)]; (1, 1, 4) -> [(1, 1, 2), (1, 1, 2)];
    (2, 2, 3) -> [(2, 2, 3)].
    """
    steps = [{1: [], 2: [2], 3: [3], 4: [2, 2]}[s] for s in as_factors(scale_factor)]
    return [tuple(axis[k] if k < len(axis) else 1 for axis in steps) for k in range(max(map(len, steps)))]  # type: ignore[misc]
