"""3D U-Net: the generator of pix2pix-style tasks and the segmenter."""

from __future__ import annotations

import torch
from torch import nn

from .checkpointing import run_block


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3³ convolutions with instance normalisation (batch-size independent) and LeakyReLU."""
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    )


class UNet3D(nn.Module):
    """``(B, in_channels, p, p, p)`` → ``(B, out_channels, p, p, p)``.

    ``channels`` are the widths per level, finest first; each further level halves
    the resolution, so ``p`` must be divisible by ``2 ** (len(channels) - 1)``.
    ``output="tanh"`` for intensities in [-1, 1], ``"logits"`` for class scores.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: tuple[int, ...] = (16, 32, 64, 128),
        output: str = "tanh",
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing  # see nets/checkpointing.py
        if output not in ("tanh", "logits"):
            raise ValueError(f"output must be 'tanh' or 'logits', got {output!r}")
        self.levels = len(channels)
        self.down = nn.ModuleList([_conv_block(in_channels, channels[0])])
        for cin, cout in zip(channels[:-1], channels[1:], strict=True):
            self.down.append(nn.Sequential(nn.MaxPool3d(2), _conv_block(cin, cout)))
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for cin, cout in zip(channels[:0:-1], channels[-2::-1], strict=True):
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear"),
                                         nn.Conv3d(cin, cout, 3, padding=1)))
            self.merge.append(_conv_block(2 * cout, cout))
        head = [nn.Conv3d(channels[0], out_channels, 1)]
        self.head = nn.Sequential(*head, nn.Tanh()) if output == "tanh" else head[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = run_block(block, x, self.checkpointing)
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = run_block(merge, torch.cat([up(x), skips.pop()], dim=1), self.checkpointing)
        return self.head(x)
