"""The critics' input layer computed over 2³ blocks (nets/blocked_conv.py) against the plain
strided convolution: the layer alone, then a whole synthesis training step.

The layer: forward and backward (input and weight gradients) of a 4³ convolution of
stride 2 to 16 channels, batch 8, in float32 and under bf16 autocast, channels_last_3d.
The step: ``SynthesisTask.train_step`` with the package's defaults (R1, the local critic,
bf16 where the CPU computes it) on one batch already in memory, with the blocked layers
and with the same layers turned back into plain convolutions (same weights).
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import report
from torch import nn

from napari_medgan.core import api
from napari_medgan.core.nets.blocked_conv import BlockedConv3d
from napari_medgan.core.tasks.synthesis import SynthesisTask

LAYOUT = torch.channels_last_3d


def seconds_per_call(call, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats


def layer_seconds(conv: nn.Module, in_channels: int, side: int, amp: bool,
                  repeats: int) -> float:
    x = torch.randn(8, in_channels, side, side, side).contiguous(memory_format=LAYOUT)
    x.requires_grad_()

    def call() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = conv(x)
        out.backward(torch.ones_like(out).contiguous(memory_format=LAYOUT))

    return seconds_per_call(call, repeats)


def step_seconds(blocked: bool, steps: int) -> float:
    config = api.Config()
    config.model.patch_size, config.train.batch_size = 32, 8
    task = SynthesisTask(config, torch.device("cpu"))
    if not blocked:  # the same weights in the plain convolution
        for net in task.nets.values():
            for module in net.modules():
                if type(module) is BlockedConv3d:
                    module.__class__ = nn.Conv3d
    batch = {"image": torch.rand(8, 1, 32, 32, 32) * 2 - 1}
    counter = iter(range(1, 10**9))
    return seconds_per_call(lambda: task.train_step(lambda: batch, next(counter)), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls of the layer")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for in_channels, side in ((1, 32), (2, 32), (1, 64)):
        for amp in (False, True):
            plain = nn.Conv3d(in_channels, 16, 4, stride=2, padding=1).to(memory_format=LAYOUT)
            ours = BlockedConv3d(in_channels, 16).to(memory_format=LAYOUT)
            ours.load_state_dict(plain.state_dict())
            times = [layer_seconds(conv, in_channels, side, amp, args.repeats)
                     for conv in (plain, ours)]
            rows.append([f"input layer, {in_channels} channel(s), {side}³",
                         "bf16 autocast" if amp else "float32",
                         f"{1000 * times[0]:.2f}", f"{1000 * times[1]:.2f}",
                         f"{times[0] / times[1]:.2f}"])
    times = [step_seconds(blocked, args.steps) for blocked in (False, True)]
    rows.append(["synthesis train step (defaults, 32³, batch 8)", "package default",
                 f"{1000 * times[0]:.1f}", f"{1000 * times[1]:.1f}",
                 f"{times[0] / times[1]:.2f}"])
    report("blocked_conv", ["what", "precision", "plain ms", "blocked ms", "speed-up"], rows,
           {"threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
