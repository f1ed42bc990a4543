import torch

from models.discriminator import Discriminator3D
from models.losses import (
    FAKE_TARGET,
    REAL_TARGET,
    GeneratorLoss,
    gradient_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)


def test_real_and_fake_targets_differ():
    assert REAL_TARGET != FAKE_TARGET
    perfect_real, perfect_fake = torch.full((4, 1), REAL_TARGET), torch.full((4, 1), FAKE_TARGET)
    assert lsgan_discriminator_loss(perfect_real, perfect_fake) == 0
    # The seed's bug (one target for both) would make swapped scores cost the same.
    assert lsgan_discriminator_loss(perfect_fake, perfect_real) > 0.5
    assert lsgan_generator_loss(perfect_real) == 0 and lsgan_generator_loss(perfect_fake) > 0


def test_discriminator_learns_to_tell_real_from_fake():
    torch.manual_seed(0)
    d = Discriminator3D(base_channels=4, num_layers=2)
    opt = torch.optim.Adam(d.parameters(), 1e-3)
    real = torch.linspace(0, 1, 8).view(1, 1, 8, 1, 1).expand(4, 1, 8, 8, 8)  # smooth ramps
    for _ in range(60):
        fake = torch.rand(4, 1, 8, 8, 8)  # noise
        loss = lsgan_discriminator_loss(d(real), d(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert d(real).mean() > d(torch.rand(4, 1, 8, 8, 8)).mean() + 0.3


def test_gradient_loss_sees_edges_not_offsets():
    x = torch.rand(2, 1, 6, 6, 6)
    assert gradient_loss(x, x) == 0
    assert gradient_loss(x + 3.0, x) < 1e-10  # a constant offset has the same gradients
    assert gradient_loss(torch.zeros_like(x), x) > 0


def test_generator_loss_weights_its_terms():
    sr, hr, scores = torch.rand(2, 1, 4, 4, 4), torch.rand(2, 1, 4, 4, 4), torch.rand(2, 1, 1, 1, 1)
    total, parts = GeneratorLoss(2.0, 3.0, 0.5, "l1")(sr, hr, scores)
    expected = 2.0 * parts["content"] + 3.0 * parts["gradient"] + 0.5 * parts["adversarial"]
    assert torch.isclose(total, expected)
    assert torch.isclose(parts["content"], (sr - hr).abs().mean())
    _, no_adversary = GeneratorLoss()(sr, hr, None)
    assert no_adversary["adversarial"] == 0
