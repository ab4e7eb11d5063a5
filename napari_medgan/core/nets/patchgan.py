"""3D PatchGAN discriminator: one realness logit per overlapping sub-volume (pix2pix)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .blocked_conv import BlockedConv3d


def smallest_input(layers: int) -> int:
    """The smallest side a :class:`PatchGAN3D` of ``layers`` takes: its ``layers``
    stride-2 convolutions halve the side and its last two 4³ convolutions (stride 1,
    padding 1) take one voxel each, leaving ``side / 2**layers - 2 >= 1``."""
    return 3 * 2**layers


class PatchGAN3D(nn.Module):
    """``(B, in_channels, p, p, p)`` → ``(B, 1, p', p', p')`` logits.

    Judging local sub-volumes rather than the whole patch pushes the generator
    towards sharp local texture, while the L1 term of the task keeps the layout.
    ``layers`` stride-2 convolutions set the receptive field: 1 → 16³, 2 → 34³,
    3 → 70³ voxels (pix2pix's 70 × 70); the input needs :func:`smallest_input` a side.
    """

    def __init__(self, in_channels: int = 2, channels: int = 32, layers: int = 3,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        wrap = _spectral_norm if spectral_norm else (lambda layer: layer)
        blocks: list[nn.Module] = [wrap(BlockedConv3d(in_channels, channels)),
                                   nn.LeakyReLU(0.2, inplace=True)]
        width = channels
        for index in range(1, layers + 1):
            stride = 2 if index < layers else 1
            out = min(channels * 2**index, 8 * channels)
            blocks += [wrap(nn.Conv3d(width, out, 4, stride, 1, bias=False)),
                       nn.InstanceNorm3d(out, affine=True), nn.LeakyReLU(0.2, inplace=True)]
            width = out
        blocks.append(wrap(nn.Conv3d(width, 1, 4, 1, 1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net[:-1](x)
        # the one-channel head in float32: under bf16 autocast on the CPU its weight
        # gradient came out non-finite in 7 of 300 identical runs (oneDNN), 0 in float32
        # (the demo's DCGAN G and D and a small U-Net, probed alike: 0 of 300 each)
        with torch.autocast(x.device.type, enabled=False):
            return self.net[-1](features.float())
