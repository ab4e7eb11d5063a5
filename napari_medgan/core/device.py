"""Choosing the compute device and turning out-of-memory into advice."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from .errors import DeviceError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device_spec(spec: str) -> bool:
    """Whether ``spec`` names a device of a kind we run on (that it exists is checked later)."""
    return _DEVICE_SPEC.fullmatch((spec or "auto").strip().lower()) is not None


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise DeviceError(f"Unknown device {spec!r}; use {DEVICE_CHOICES}.") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"Device {spec!r} was asked for but this PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}); use --device cpu, or install a CUDA build "
                "of PyTorch (see the README)."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"Device {spec!r} does not exist: this machine has {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}."
            )
    elif device.type != "cpu":
        raise DeviceError(f"Device {spec!r} is not supported; use {DEVICE_CHOICES}.")
    return device


def device_choices() -> list[tuple[str, str]]:
    """``(label, spec)`` for a face's device menu: auto, the CPU, then each CUDA GPU.

    A GPU's label names it and its memory, so a user with several picks the right one.
    """
    choices = [("auto (a CUDA GPU if there is one, else the CPU)", "auto"), ("CPU", "cpu")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            memory = props.total_memory / 2**30
            choices.append((f"cuda:{index} {props.name} ({memory:.0f} GiB)", f"cuda:{index}"))
    return choices


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


@contextlib.contextmanager
def out_of_memory_advice(device: torch.device, patch_size: int, batch_size: int) -> Iterator[None]:
    """Re-raise an allocation failure as a DeviceError that says what to shrink."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if not (isinstance(err, MemoryError) or _is_out_of_memory(err)):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = [f"a smaller batch (--batch {max(1, batch_size // 2)})"]
        if patch_size > 8:
            smaller.append(f"a smaller patch (--patch {patch_size // 2})")
        raise DeviceError(
            f"Out of memory on {device} with patch {patch_size}³ and batch {batch_size}; "
            f"try {' or '.join(smaller)}."
        ) from err
