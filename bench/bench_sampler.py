"""Patches per second: device sampler vs torchio Queue vs a naive slicing loop.

All three cut random patches from the same in-memory volumes in the same run, and take turns in
rounds (median reported), so the ratios against the Queue are comparable. Prints a table and writes
``bench/results/sampler.json``.

    python bench/bench_sampler.py --device cpu --patch 32 --batch 16 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_medgan.core.data.patches import DevicePatchSampler, QueuePatchSampler

SHAPES = [(160, 190, 160), (150, 200, 170), (165, 185, 155)]


def naive_loop(volumes: list[torch.Tensor], patch: int, batch: int, device: torch.device,
               seed: int) -> Callable[[], torch.Tensor]:
    """The obvious in-memory baseline: slice one patch at a time in Python, then stack."""
    rng = np.random.default_rng(seed)

    def next_batch() -> torch.Tensor:
        patches = []
        for _ in range(batch):
            volume = volumes[rng.integers(len(volumes))]
            i, j, k = (int(rng.integers(s - patch + 1)) for s in volume.shape[1:])
            patches.append(volume[:, i:i + patch, j:j + patch, k:k + patch])
        return torch.stack(patches).to(device)

    return next_batch


def contiguous_copy(volumes: list[torch.Tensor], patch: int, batch: int, device: torch.device,
                    seed: int) -> Callable[[], torch.Tensor]:
    """Not a sampler: a batch's bytes copied from one random contiguous run of the volumes.

    No scattered reads at all, so this is the memory-bandwidth ceiling any sampler that
    returns a fresh batch tensor can reach on this machine.
    """
    flat = torch.cat([v.reshape(-1) for v in volumes]).to(device)
    size = batch * patch**3
    rng = np.random.default_rng(seed)

    def next_batch() -> torch.Tensor:
        start = int(rng.integers(flat.numel() - size))
        return flat[start:start + size].clone().view(batch, 1, patch, patch, patch)

    return next_batch


def measure(next_batch: Callable[[], torch.Tensor], seconds: float, device: torch.device) -> float:
    """Patches per second over about ``seconds`` (device work included)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    patches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        patches += next_batch().shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return patches / (time.perf_counter() - start)


def interleaved(samplers: dict[str, Callable[[], torch.Tensor]], seconds: float, rounds: int,
                device: torch.device) -> dict[str, float]:
    """Median rate over rounds that take turns, so a busy moment of the machine hits all."""
    for next_batch in samplers.values():  # warm-up: first fills, allocations
        measure(next_batch, 0.2, device)
    rates: dict[str, list[float]] = {name: [] for name in samplers}
    for _ in range(rounds):
        for name, next_batch in samplers.items():
            rates[name].append(measure(next_batch, seconds / rounds, device))
    return {name: float(np.median(values)) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="per sampler, all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampler.json"))
    args = parser.parse_args()
    device = torch.device(args.device)

    gen = torch.Generator().manual_seed(0)
    volumes = [torch.randn(1, *shape, generator=gen) for shape in SHAPES]
    affines = [np.eye(4) for _ in volumes]
    samplers = {
        "device": DevicePatchSampler(volumes, args.patch, args.batch, device=device, seed=0)
        .next_batch,
        "queue": QueuePatchSampler(volumes, args.patch, args.batch, affines=affines, seed=0,
                                   device=device).next_batch,
        "naive loop": naive_loop(volumes, args.patch, args.batch, device, seed=0),
        "memcpy bound": contiguous_copy(volumes, args.patch, args.batch, device, seed=0),
    }
    rates = interleaved(samplers, args.seconds, args.rounds, device)

    print(f"{'sampler':<12} {'patches/s':>12} {'x queue':>9}")
    for name, rate in rates.items():
        print(f"{name:<12} {rate:>12.0f} {rate / rates['queue']:>9.1f}")
    result = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "volumes": SHAPES,
        "patch": args.patch,
        "batch": args.batch,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "patches_per_s": rates,
        "x_queue": {name: rate / rates["queue"] for name, rate in rates.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
