import pytest
import torch

from models.discriminator import Discriminator3D


@pytest.mark.parametrize("size", [8, 16, 24, 40])
def test_scores_patches_of_any_size(size):
    d = Discriminator3D(base_channels=4, num_layers=3)
    scores = d(torch.randn(2, 1, size, size, size))
    assert scores.shape == (2, 1, size // 8, size // 8, size // 8)


def test_too_small_patch_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 8"):
        Discriminator3D(base_channels=4, num_layers=3)(torch.randn(1, 1, 4, 8, 8))
