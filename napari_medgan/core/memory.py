"""The memory plan: refuse a training config that can't fit before any step is spent.

A 3D GAN's step memory grows with the patch's voxel count times the batch, so a patch
one notch too large runs out of memory minutes into a run, or (on the CPU) drives the
machine into swap. Before training, :func:`plan_memory` runs a dry step of a fresh copy
of the task's nets on a batch of 2 and of 3 real patches (crops of the training volumes)
and measures the memory the step takes on top of what is already held:

- CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the step (the
  caching allocator's own count, exact for what torch asks for).
- CPU: torch keeps no allocator statistics there, so :class:`_PeakBytes` counts the
  bytes of every tensor storage the step's operations create, and frees them when the
  storage dies (a dispatch mode: every tensor of the step, saved activations, gradients,
  optimiser states and temporaries, whatever autograd, autocast or the optimiser does).

The step's memory is linear in the batch (activations and the batch itself) plus a
fixed part (gradients, optimiser states, per-step buffers), so the two points give the
estimate for any batch. :func:`check_memory` refuses a config whose estimate, with
:data:`HEADROOM` for allocator fragmentation and workspaces, exceeds the memory
available (CUDA: the device's free memory; CPU: ``MemAvailable`` of /proc/meminfo),
naming the largest batch that fits, a smaller patch, activation checkpointing and bf16.
The dry step draws no number from any random stream the run uses.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .config import Config
from .distributed import World
from .errors import ConfigError

HEADROOM = 1.1  # the estimate times this must fit: fragmentation, cuDNN workspaces
# the batch sizes of the dry steps: from 2, as under bf16 autocast on the CPU a step's
# memory grows half as fast from batch 1 to 2 as beyond (oneDNN), and batches 1 and 2
# underestimated batch 8 of the demo's nets by 38 %; from 2 to 3 it is 6 % under
PROBE_BATCHES = (2, 3)


@dataclass(frozen=True)
class MemoryPlan:
    """A step's memory in one process on ``device``: ``fixed + per_patch * batch`` bytes.

    Under torchrun, ``batch_size`` is this process's share of the global batch of
    ``processes`` processes, and ``available`` this process's share of the memory: on the
    CPU the processes of one machine share its RAM.
    """

    device: torch.device
    fixed: int
    per_patch: int
    batch_size: int
    available: int | None  # None: this system doesn't say
    processes: int = 1

    @property
    def step_bytes(self) -> int:
        return self.fixed + self.per_patch * self.batch_size

    def fits(self, batch_size: int) -> bool:
        need = HEADROOM * (self.fixed + self.per_patch * batch_size)
        return self.available is None or need <= self.available

    def largest_batch(self) -> int:
        """The largest batch that fits (0: not even one patch)."""
        if self.available is None:
            return self.batch_size
        room = self.available / HEADROOM - self.fixed
        return max(0, int(room // max(self.per_patch, 1)))


class _PeakBytes(TorchDispatchMode):
    """Bytes of tensor storage the operations run under it create: now and at the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._storages: dict[int, weakref.ref] = {}

    def _freed(self, key: int, size: int) -> None:
        if self._storages.pop(key, None) is not None:
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            # views and in-place results share an input's storage: nothing new
            if size and key not in inputs and key not in self._storages:
                self._storages[key] = weakref.ref(
                    storage, lambda _, key=key, size=size: self._freed(key, size))
                self.live += size
                self.peak = max(self.peak, self.live)
        return out


def _sample_patches(roles: dict[str, list[torch.Tensor]], patch_size: int,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """One real ``(1, C, p, p, p)`` patch per role: the corner crop of its first volume."""
    patches = {}
    for role, volumes in roles.items():
        crop = volumes[0][:, :patch_size, :patch_size, :patch_size].float().clone()
        short = [patch_size - size for size in reversed(crop.shape[1:])]
        if any(short):
            pads = [amount for missing in short for amount in (0, missing)]
            crop = torch.nn.functional.pad(crop[None], pads, mode="replicate")[0]
        patches[role] = crop[None].to(device)
    return patches


def _step_bytes(make_task: Callable[[], object], patches: dict[str, torch.Tensor],
                batch: int, device: torch.device) -> int:
    """Memory one training step of a fresh task takes on top of what is held before it."""
    task = make_task()

    def next_batch() -> dict[str, torch.Tensor]:
        return {role: task.to_layout(patch.expand(batch, *patch.shape[1:]).clone())
                for role, patch in patches.items()}

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        task.train_step(next_batch, 1)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _PeakBytes() as counter:
        task.train_step(next_batch, 1)
    return counter.peak


def available_bytes(device: torch.device) -> int | None:
    """Memory a step can still take: free device memory on CUDA, available RAM on the CPU."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:  # other Unix systems: free pages (a lower bound of what is available)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None  # e.g. Windows: no check


def plan_memory(config: Config, make_task: Callable[[], object],
                roles: dict[str, list[torch.Tensor]], world: World) -> MemoryPlan:
    """Measure dry steps at :data:`PROBE_BATCHES` and extrapolate to this process's batch.

    ``make_task()`` builds a fresh task like the one that will train (its weights and
    optimiser states are thrown away); ``roles``: the training volumes by role; ``world``:
    the processes training together, which split the global batch. On the CPU the
    processes of one machine also split its RAM; on CUDA each has its own GPU.
    """
    device = world.device
    patches = _sample_patches(roles, config.model.patch_size, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        small, large = (_step_bytes(make_task, patches, b, device) for b in PROBE_BATCHES)
    per_patch = max(0, (large - small) // (PROBE_BATCHES[1] - PROBE_BATCHES[0]))
    fixed = max(0, small - per_patch * PROBE_BATCHES[0])
    available = available_bytes(device)
    if available is not None and device.type == "cpu":
        available //= world.local_size
    return MemoryPlan(device, fixed, per_patch, world.per_process(config.train.batch_size),
                      available, world.size)


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def check_memory(plan: MemoryPlan, config: Config) -> None:
    """Refuse a plan that doesn't fit, saying what would (ConfigError)."""
    if plan.fits(plan.batch_size):
        return
    patch, batch, processes = config.model.patch_size, plan.batch_size, plan.processes
    tips = []
    largest = plan.largest_batch() * processes  # the global batch, as --batch means it
    if largest >= processes:
        tips.append(f"a batch of at most {largest} (--batch {largest})")
    if patch > 8:
        tips.append(f"a smaller patch (--patch {patch // 2})")
    if not config.model.activation_checkpointing:
        tips.append("model.activation_checkpointing: true")
    if plan.device.type == "cuda" and not config.train.amp:
        tips.append("bf16 autocast (train.amp: true)")
    each = "" if processes == 1 else (
        f" per process (the global batch {batch * processes} over {processes} processes)")
    raise ConfigError(
        f"Training with patch {patch}³ and batch {batch}{each} would need about "
        f"{_size(plan.step_bytes)} per step on {plan.device} ({_size(plan.per_patch)} per "
        f"patch of the batch plus {_size(plan.fixed)}), but only "
        f"{_size(plan.available)} is available{' to each' if processes > 1 else ''}; "
        f"try {', or '.join(tips)}."
    )
