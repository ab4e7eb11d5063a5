"""What the image-to-image tasks share: a U-Net generator judged by a PatchGAN."""

from __future__ import annotations

import math

import torch

from ..config import Config
from ..losses import discriminator_loss, generator_loss, gradient_penalty
from ..nets.patchgan import PatchGAN3D
from ..nets.unet import UNet3D
from .base import Task


def unet(config: Config, in_channels: int, out_channels: int, output: str = "tanh") -> UNet3D:
    levels = config.model.unet_channels
    if config.model.patch_size % 2 ** (len(levels) - 1):
        from ..errors import ConfigError

        raise ConfigError(
            f"A U-Net with {len(levels)} levels needs a patch size divisible by "
            f"{2 ** (len(levels) - 1)}; got {config.model.patch_size}."
        )
    return UNet3D(in_channels, out_channels, tuple(levels), output,
                  config.model.activation_checkpointing)


def patchgan(config: Config, in_channels: int) -> PatchGAN3D:
    """A PatchGAN whose depth suits the patch: 1 stride-2 layer at 16³, up to 3 at 64³."""
    layers = max(1, min(3, int(math.log2(config.model.patch_size)) - 3))
    return PatchGAN3D(in_channels, config.model.patchgan_channels, layers,
                      config.model.spectral_norm)


def critic_step(task: Task, critic: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """One update of ``critic`` on a real and a (detached) fake input; returns its loss.

    With ``wgan-gp`` the gradient penalty is added (one critic step per generator step
    here, as conditional GANs usually train).
    """
    D = task.trained(critic)
    fake = fake.detach()
    with task.autocast():
        loss = discriminator_loss(task.config.loss, D(real), D(fake))
    if task.config.loss == "wgan-gp":
        penalty = gradient_penalty(D, real.float(), fake.float(), task.rng)
        loss = loss + task.config.train.gp_weight * penalty
    task.optimizers[critic].zero_grad(set_to_none=True)
    loss.backward()
    task.optimizers[critic].step()
    return loss.detach()


def adversarial(task: Task, critic: str, fake: torch.Tensor) -> torch.Tensor:
    """The weighted adversarial term a generator minimises against ``critic``."""
    with task.autocast():
        loss = generator_loss(task.config.loss, task.nets[critic](fake))
    return task.config.train.adversarial_weight * loss
