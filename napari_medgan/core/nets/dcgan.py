"""DCGAN-style 3D generator and discriminator for cubic patches (8³ to 256³).

Both nets work level by level between 4³ and the patch size, doubling the
width at each coarser level (capped by ``max_channels``), as in Radford et al.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .blocked_conv import BlockedConv3d
from .checkpointing import run_levels


def _level_widths(patch_size: int, channels: int, max_channels: int) -> list[int]:
    """Widths from 4³ (first) to the patch size (last)."""
    levels = int(math.log2(patch_size)) - 2
    return [min(channels * 2**level, max_channels) for level in reversed(range(levels + 1))]


#: residual blocks (``g_residual``, ``d_residual``) go at the levels up to this side and
#: below the patch size: where the nets are wide and cheap, not at full resolution
RESIDUAL_UP_TO = 16


def _residual_here(side: int, patch_size: int) -> bool:
    return side <= RESIDUAL_UP_TO and side < patch_size


class ResidualBlock3D(nn.Module):
    """``act(x + f(x))``, ``f`` two 3³ convolutions: depth at a level without a harder path
    for the gradient (He et al., 2016); near the identity at DCGAN initialisation."""

    def __init__(self, width: int, activation: type[nn.Module], batch_norm: bool,
                 wrap=lambda layer: layer, **activation_args) -> None:
        super().__init__()
        norm = (lambda: [nn.BatchNorm3d(width)]) if batch_norm else list
        self.body = nn.Sequential(
            wrap(nn.Conv3d(width, width, 3, padding=1, bias=not batch_norm)), *norm(),
            activation(**activation_args),
            wrap(nn.Conv3d(width, width, 3, padding=1, bias=not batch_norm)), *norm(),
        )
        self.activation = activation(**activation_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x + self.body(x))


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolutions and N(1, 0.02) norm scales, as in the DCGAN paper."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        weight = getattr(module, "parametrizations", None)
        target = weight.weight.original if weight is not None else module.weight
        nn.init.normal_(target, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm3d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator3D(nn.Module):
    """Noise ``(B, latent_dim)`` → patch ``(B, out_channels, p, p, p)`` in [-1, 1].

    ``label_channels`` > 0 adds that many channels after the image's: class
    probabilities (a softmax over them), so one net draws an image with its label map.

    ``upsample="resize"`` doubles resolution by nearest interpolation and a 3³
    convolution instead of a transposed convolution, which avoids checkerboard
    artefacts (Odena et al., 2016); ``"trilinear"`` interpolates linearly instead, so no
    level passes on the blocks of a nearest copy either.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        out_channels: int = 1,
        patch_size: int = 32,
        channels: int = 32,
        max_channels: int = 256,
        upsample: str = "transpose",
        residual: bool = False,
        label_channels: int = 0,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.label_channels = label_channels
        self.checkpointing = checkpointing  # see nets/checkpointing.py
        widths = _level_widths(patch_size, channels, max_channels)

        def residual_block(width: int, side: int) -> list[nn.Module]:
            if not (residual and _residual_here(side, patch_size)):
                return []
            return [ResidualBlock3D(width, nn.ReLU, batch_norm=True, inplace=True)]

        self.project = nn.Sequential(
            nn.ConvTranspose3d(latent_dim, widths[0], kernel_size=4, bias=False),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
            *residual_block(widths[0], 4),
        )
        blocks = []
        for level, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if upsample in ("resize", "trilinear"):
                up = [
                    nn.Upsample(scale_factor=2, mode="nearest" if upsample == "resize"
                                else "trilinear"),
                    nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=False),
                ]
            else:
                up = [nn.ConvTranspose3d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)]
            blocks += [*up, nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                       *residual_block(cout, 4 * 2 ** (level + 1))]
        self.upsample = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv3d(widths[-1], out_channels + label_channels, 3, padding=1), nn.Tanh()
        )
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z.view(z.shape[0], self.latent_dim, 1, 1, 1))
        x = run_levels(self.upsample, x, self.checkpointing)
        if not self.label_channels:
            return self.head(x)
        raw = self.head[0](x)
        image, logits = raw.split([raw.shape[1] - self.label_channels, self.label_channels], 1)
        return torch.cat([self.head[1](image), logits.softmax(1)], 1)


class DCGANDiscriminator3D(nn.Module):
    """Patch → one realness logit per patch.

    ``norm="batch"`` puts BatchNorm after every inner convolution, as DCGAN does:
    without it the discriminator of a short CPU run was seen to give up (logits
    stuck at 0). The WGAN-GP gradient penalty needs ``norm="none"``, because batch
    statistics couple the samples. ``spectral_norm=True`` bounds the Lipschitz constant.
    """

    def __init__(
        self,
        in_channels: int = 1,
        patch_size: int = 32,
        channels: int = 32,
        max_channels: int = 256,
        spectral_norm: bool = False,
        norm: str = "batch",
        residual: bool = False,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing  # see nets/checkpointing.py
        wrap = _spectral_norm if spectral_norm else (lambda layer: layer)
        widths = _level_widths(patch_size, channels, max_channels)[::-1]  # patch size → 4³
        layers: list[nn.Module] = []
        cin = in_channels
        for index, cout in enumerate(widths[:-1]):
            conv = BlockedConv3d(cin, cout) if index == 0 else nn.Conv3d(cin, cout, 4, 2, 1)
            layers.append(wrap(conv))
            if norm == "batch" and index > 0:  # not on the input layer, as in DCGAN
                layers.append(nn.BatchNorm3d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if residual and _residual_here(patch_size // 2 ** (index + 1), patch_size):
                layers.append(ResidualBlock3D(cout, nn.LeakyReLU, norm == "batch", wrap,
                                              negative_slope=0.2, inplace=True))
            cin = cout
        layers.append(wrap(nn.Conv3d(cin, 1, kernel_size=4)))
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_levels(self.net, x, self.checkpointing).flatten(1).squeeze(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations ``(B, width · 4³)``: what the last layer judges.

        f-AnoGAN compares these for an image and its reconstruction (feature residual).
        """
        return run_levels(self.net[:-1], x, self.checkpointing).flatten(1)


class DCGANEncoder3D(DCGANDiscriminator3D):
    """Patch → latent vector ``(B, latent_dim)``: the discriminator's trunk with a latent head.

    The inverse of :class:`DCGANGenerator3D` that f-AnoGAN trains (Schlegl et al., 2019).
    The output is unbounded (no tanh): the generator's prior is N(0, I), and a tanh
    would confine codes to (−1, 1)^d, which holds under 5 % of that prior's mass at d = 8.
    ``norm="none"`` by default, so training and inference compute the same function.
    """

    def __init__(
        self,
        in_channels: int = 1,
        latent_dim: int = 128,
        patch_size: int = 32,
        channels: int = 32,
        max_channels: int = 256,
        norm: str = "none",
        checkpointing: bool = False,
    ) -> None:
        super().__init__(in_channels, patch_size, channels, max_channels, False, norm,
                         checkpointing)
        self.latent_dim = latent_dim
        self.net[-1] = nn.Conv3d(self.net[-1].in_channels, latent_dim, kernel_size=4)
        init_dcgan_weights(self.net[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_levels(self.net, x, self.checkpointing).flatten(1)
