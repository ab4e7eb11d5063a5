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


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, make_input, batches: int = 8) -> None:
    """Re-estimate BatchNorm running statistics for ``net``'s own weights.

    The statistics an EMA copy inherits were gathered by the live generator, whose
    weights differ; in eval mode such an EMA generator drifts (seen: mean −0.37
    instead of +0.28). ``make_input(i)`` gives the i-th calibration batch.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = net.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    net.train()
    for i in range(batches):
        net(make_input(i))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)
