import pytest
import torch

from napari_medgan.core.losses import (
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.2, 1.0])


def test_nonsaturating_matches_the_textbook_formula():
    expected_d = -(torch.log(torch.sigmoid(REAL)) + torch.log(1 - torch.sigmoid(FAKE))).mean()
    expected_g = -torch.log(torch.sigmoid(FAKE)).mean()
    assert torch.isclose(discriminator_loss("nonsaturating", REAL, FAKE), expected_d)
    assert torch.isclose(generator_loss("nonsaturating", FAKE), expected_g)


def test_nonsaturating_stays_finite_for_huge_logits():
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(discriminator_loss("nonsaturating", big, -big))
    assert torch.isfinite(generator_loss("nonsaturating", -big))


def test_hinge_and_lsgan_values():
    assert torch.isclose(
        discriminator_loss("hinge", REAL, FAKE),
        torch.relu(1 - REAL).mean() + torch.relu(1 + FAKE).mean(),
    )
    assert torch.isclose(generator_loss("hinge", FAKE), -FAKE.mean())
    assert torch.isclose(
        discriminator_loss("lsgan", REAL, FAKE),
        0.5 * ((REAL - 1) ** 2).mean() + 0.5 * (FAKE**2).mean(),
    )
    assert torch.isclose(generator_loss("lsgan", FAKE), 0.5 * ((FAKE - 1) ** 2).mean())
    assert torch.isclose(discriminator_loss("wgan-gp", REAL, FAKE), FAKE.mean() - REAL.mean())


class LinearCritic(torch.nn.Module):
    def __init__(self, norm: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, 1, 2, 2, 2))
        with torch.no_grad():
            self.w[0, 0, 0, 0, 0] = norm

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


@pytest.mark.parametrize(("norm", "penalty"), [(1.0, 0.0), (2.0, 1.0), (3.0, 4.0)])
def test_gradient_penalty_of_a_linear_critic_is_known(norm, penalty):
    real, fake = torch.randn(4, 1, 2, 2, 2), torch.randn(4, 1, 2, 2, 2)
    gp = gradient_penalty(LinearCritic(norm), real, fake)
    assert torch.isclose(gp, torch.tensor(penalty), atol=1e-6)
    gp.backward()  # the penalty must be differentiable for the critic


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError):
        discriminator_loss("magic", REAL, FAKE)


def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm_and_trains_it():
    critic = torch.nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, -2.0, 2.0]]))  # ‖w‖² = 9
    real = torch.randn(5, 3)
    penalty = r1_penalty(critic, real)
    assert torch.isclose(penalty, torch.tensor(9.0))
    penalty.backward()  # d‖w‖²/dw = 2w: the penalty reaches the critic's weights
    assert torch.allclose(critic.weight.grad, 2 * critic.weight.detach())
    assert critic.bias.grad is None or torch.equal(critic.bias.grad, torch.zeros(1))


def test_r1_penalty_is_a_mean_over_samples_of_each_ones_gradient():
    class Square(torch.nn.Module):  # D(x) = Σ x²: ∇ = 2x, ‖∇‖² = 4 Σ x²
        def forward(self, x):
            return (x**2).flatten(1).sum(1)

    real = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    assert torch.isclose(r1_penalty(Square(), real), torch.tensor((4 * 1 + 4 * 9) / 2))
