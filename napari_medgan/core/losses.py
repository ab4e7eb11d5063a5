"""Adversarial losses on discriminator logits, and the gradient penalties (WGAN-GP, R1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Loss the discriminator minimises, from its logits on real and fake patches.

    ``nonsaturating``: −mean[log D(x) + log(1 − D(G(z)))], written with softplus
    for numerical stability (log σ(a) = −softplus(−a)).
    """
    if kind == "nonsaturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "lsgan":
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Loss the generator minimises; ``nonsaturating`` is −mean log D(G(z))."""
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    if kind == "lsgan":
        return 0.5 * ((fake - 1.0) ** 2).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(‖∇D(x̂)‖₂ − 1)² on random interpolates x̂ (Gulrajani et al., 2017)."""
    shape = (real.shape[0], *([1] * (real.ndim - 1)))
    alpha = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    mixed = alpha * real + (1.0 - alpha) * fake
    return ((_input_gradient_norms(critic, mixed) - 1.0) ** 2).mean()


def r1_penalty(critic: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """E‖∇D(x)‖₂² on real inputs (R1, Mescheder et al., 2018): flattens D around the data,
    so it can't push real samples apart from fakes arbitrarily hard. Weighted γ/2."""
    return (_input_gradient_norms(critic, real) ** 2).mean()


def _input_gradient_norms(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """‖∇ₓ D(x)‖₂ per sample, kept in the graph so a penalty on it trains D."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1).norm(dim=1)
