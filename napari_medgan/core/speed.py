"""The speed switches (#11): config fields that trade nothing but speed.

"auto" turns a switch on with CUDA only: on the CPU, bench/README.md measured none of them
to pay (``compile`` was slower), and their CUDA defaults follow PyTorch's guidance until
a GPU measurement backs or overturns them (``bench_train.py --device cuda``). They
change no result beyond floating-point rounding. bfloat16 autocast (``train.amp``) is on
wherever the device computes bfloat16 natively, the CPU included: 1.4× the synthesis
steps/s of float32 on the 2-core CPU measured (bench/README.md). On the CPU it covers
training only (``Task.autocast``): inference stays float32, unquantised.
"""

from __future__ import annotations

import warnings

import torch

from .config import Config
from .errors import MedGANWarning


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


#: the critic whose input gradient a penalty (R1, WGAN-GP's) differentiates again
PENALISED_CRITIC = "D"


def compile_nets(config: Config, nets: dict[str, torch.nn.Module],
                 backend: str = "inductor") -> list[str]:
    """``torch.compile`` each trained net in place (its weights keep their names in
    checkpoints), but the critic a gradient penalty differentiates twice: compiled autograd
    has no double backward ("torch.compile with aot_autograd does not currently support
    double backward", torch 2.13), so it stays eager, with a warning; its name is returned.
    Nets that don't train (G_ema) stay eager too: they only sample at previews and
    checkpoints, where a compiled one recompiled for each new batch size (78 s,
    bench/README.md)."""
    if not config.train.compile:
        return []
    penalty = "WGAN-GP" if config.loss == "wgan-gp" else "R1" if config.r1_weight > 0 else None
    eager = [PENALISED_CRITIC] if penalty and PENALISED_CRITIC in nets else []
    if eager:
        warnings.warn(f"train.compile: {PENALISED_CRITIC} runs uncompiled, as its gradient "
                      f"penalty ({penalty}) needs a double backward that torch.compile "
                      "lacks; the other nets are compiled.", MedGANWarning, stacklevel=3)
    for name, net in nets.items():
        if name not in eager and any(p.requires_grad for p in net.parameters()):
            net.compile(backend=backend)
    return eager


def bf16_autocast(config: Config, device: torch.device) -> bool:
    """bfloat16 autocast with ``train.amp`` where the device computes bfloat16 natively:
    a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX. Elsewhere oneDNN
    emulates bfloat16, which is slower than float32."""
    if not config.train.amp:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_computes_bf16()


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (torch.cpu's checks are private: a torch
    without them counts as no)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)
