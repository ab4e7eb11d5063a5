"""The speed switches (#11): config fields that trade nothing but speed.

"auto" turns a switch on with CUDA only: on the CPU, bench/README.md measured none of them
to pay (``compile`` was slower), and their CUDA defaults follow PyTorch's guidance until
a GPU measurement backs or overturns them (``bench_train.py --device cuda``). They
change no result beyond floating-point rounding.
"""

from __future__ import annotations

import torch

from .config import Config


def _switch(value: str, device: torch.device) -> bool:
    """An "auto" / "on" / "off" switch: "auto" means on with CUDA only."""
    return value == "on" or (value == "auto" and device.type == "cuda")


def fused_adam(config: Config, device: torch.device) -> bool:
    """Adam's fused kernel: one launch for all parameters instead of several per tensor."""
    return _switch(config.train.fused_adam, device) and device.type != "meta"


def pin_host_batches(config: Config, device: torch.device) -> bool:
    """Page-locked host batches for the torchio Queue (the device sampler cuts on the device)."""
    return _switch(config.train.pin_memory, device) and torch.cuda.is_available()


def set_cudnn_benchmark(config: Config, device: torch.device) -> None:
    """cuDNN tries its convolution algorithms once per shape and keeps the fastest; patches
    have one shape, so the trial is paid once. No effect on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = _switch(config.train.cudnn_benchmark, device)


def compile_nets(config: Config, nets: dict[str, torch.nn.Module]) -> None:
    """``torch.compile`` each net in place (its weights keep their names in checkpoints)."""
    if config.train.compile:
        for net in nets.values():
            net.compile()
