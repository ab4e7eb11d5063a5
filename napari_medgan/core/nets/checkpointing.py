"""Activation checkpointing: keep a block's input, recompute its activations in backward.

A 3D net's memory per step is mostly the activations autograd keeps for the backward
pass (at 64³ and batch 8 they dwarf the weights). :func:`run_block` keeps only each
block's input and runs the block again during backward (torch.utils.checkpoint,
non-reentrant), trading about one more forward pass for that memory.

The recomputation would update BatchNorm's running statistics a second time; they are
put back after it, so a checkpointed net ends a step in the same state as a plain one.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)  # where one level of a flat layer list ends


class _NormStatisticsKept:
    """Undo what running the block again does to its BatchNorm buffers.

    A class, not a generator, because double backward (the WGAN-GP penalty) recomputes
    a block twice with the same context.
    """

    def __init__(self, block: nn.Module) -> None:
        self.norms = [m for m in block.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.saved: list[list[torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [[b.clone() for b in norm.buffers()] for norm in self.norms]

    def __exit__(self, *exc) -> None:
        # also when the recomputation stops early, once it has what backward needs
        with torch.no_grad():
            for norm, buffers in zip(self.norms, self.saved, strict=True):
                for buffer, value in zip(norm.buffers(), buffers, strict=True):
                    buffer.copy_(value)


def run_block(block: nn.Module, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """``block(x)``, checkpointed when ``enabled`` and autograd is recording."""
    if not (enabled and torch.is_grad_enabled()):
        return block(x)
    return checkpoint(block, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _NormStatisticsKept(block)))


def run_levels(layers: nn.Sequential, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """Run a flat Sequential level by level, each level a block ending at an activation.

    The nets keep their flat layer lists, so checkpoints written without checkpointing
    load unchanged.
    """
    start = 0
    for end, layer in enumerate(layers, 1):
        if isinstance(layer, ACTIVATIONS) or end == len(layers):
            x = run_block(layers[start:end], x, enabled)
            start = end
    return x
