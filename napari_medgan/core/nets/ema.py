"""Exponential moving average of a generator's weights, the copy used for synthesis."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """Blend ``model`` into ``ema``; buffers (BatchNorm statistics) are copied.

    The decay warms up as ``min(decay, (1 + step) / (10 + step))`` so that a short
    run's average is not dominated by the random initial weights.
    """
    rate = min(decay, (1.0 + step) / (10.0 + step))
    for ema_p, p in zip(ema.parameters(), model.parameters(), strict=True):
        ema_p.lerp_(p, 1.0 - rate)
    for ema_b, b in zip(ema.buffers(), model.buffers(), strict=True):
        ema_b.copy_(b)
