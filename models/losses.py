"""The GAN objective: least-squares adversarial terms, content loss and image-gradient loss."""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

# Least-squares GAN (Mao et al. 2017) with the a-b-c = 0-1-1 coding. The seed used one target for
# both real and fake volumes, so its discriminator learned nothing; these two must differ.
REAL_TARGET = 1.0
FAKE_TARGET = 0.0


def lsgan_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    real = F.mse_loss(real_scores, torch.full_like(real_scores, REAL_TARGET))
    fake = F.mse_loss(fake_scores, torch.full_like(fake_scores, FAKE_TARGET))
    return 0.5 * (real + fake)


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * F.mse_loss(fake_scores, torch.full_like(fake_scores, REAL_TARGET))


def content_loss(sr: torch.Tensor, hr: torch.Tensor, kind: Literal["mse", "l1"] = "mse") -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(sr, hr)
    if kind == "l1":
        return F.l1_loss(sr, hr)
    raise ValueError(f"unknown content loss {kind!r}; choose 'mse' or 'l1'")


def spatial_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Forward differences along D, H, W of (B, C, D, H, W).
    return x.diff(dim=-3), x.diff(dim=-2), x.diff(dim=-1)


def gradient_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the image gradients, summed over the three axes (the seed's term)."""
    return sum(F.mse_loss(g_sr, g_hr) for g_sr, g_hr in zip(spatial_gradients(sr), spatial_gradients(hr)))


class GeneratorLoss(nn.Module):
    def __init__(
        self,
        content_weight: float = 1.0,
        gradient_weight: float = 1.0,
        adversarial_weight: float = 1e-3,
        content_kind: Literal["mse", "l1"] = "mse",
    ) -> None:
        super().__init__()
        self.content_weight = content_weight
        self.gradient_weight = gradient_weight
        self.adversarial_weight = adversarial_weight
        self.content_kind = content_kind

    def forward(
        self, sr: torch.Tensor, hr: torch.Tensor, fake_scores: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {
            "content": content_loss(sr, hr, self.content_kind),
            "gradient": gradient_loss(sr, hr),
            "adversarial": lsgan_generator_loss(fake_scores) if fake_scores is not None else sr.new_zeros(()),
        }
        total = (
            self.content_weight * parts["content"]
            + self.gradient_weight * parts["gradient"]
            + self.adversarial_weight * parts["adversarial"]
        )
        return total, parts
