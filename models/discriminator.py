"""A fully convolutional 3D discriminator: it scores patches of any size (no dense head)."""

import torch
from torch import nn


class Discriminator3D(nn.Module):
    """`num_layers` strided 4^3 convs (base_channels doubling, at most 256), then a 1-channel score map.

    The seed ended in a dense layer fixed to one patch size; a conv head gives one least-squares
    score per receptive field instead (PatchGAN, Isola et al. 2017), so any patch of at least
    2**num_layers voxels per side works. The first conv already strides: a full-resolution first
    layer cost more than the whole generator on a CPU.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, out = in_channels, base_channels
        for _ in range(num_layers):
            layers += [nn.Conv3d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels, out = out, min(out * 2, 256)
        layers.append(nn.Conv3d(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.min_size = 2**num_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, D, H, W) -> (B, 1, D/2^L, H/2^L, W/2^L)
        if min(x.shape[-3:]) < self.min_size:
            raise ValueError(f"Discriminator3D needs patches of at least {self.min_size}^3, got {tuple(x.shape[-3:])}")
        return self.net(x)
