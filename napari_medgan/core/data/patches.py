"""Training patch samplers: random 3D patches, one batch per training step.

Two interchangeable samplers draw patches from the same distribution (a volume
chosen uniformly, then a corner uniformly over all valid positions, or only among
corners whose patch centre lies in a mask):

- :class:`DevicePatchSampler` keeps the volumes on the training device and cuts a
  whole batch with one gather, so the GPU is never starved by the host;
- :class:`QueuePatchSampler` is torchio's ``Queue``, for data sets too large to keep
  on the device.

Example:
    >>> sampler = make_patch_sampler("device", [volume], patch_size=32, batch_size=8,
    ...                              affines=[affine], device="cpu", seed=0)
    >>> sampler.next_batch().shape
    torch.Size([8, 1, 32, 32, 32])
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..distributed import World
from ..errors import ConfigError, DataError

SAMPLER_KINDS = ("device", "queue")


@runtime_checkable
class PatchSampler(Protocol):
    """What the train loop needs: a batch per step, and a state for resuming."""

    def next_batch(self) -> torch.Tensor:
        """A ``(B, C, p, p, p)`` float32 batch on the training device."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, so that the state fits in a safetensors file."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


def _check_inputs(
    volumes: Sequence[torch.Tensor], patch_size: int, batch_size: int,
    masks: Sequence[torch.Tensor] | None,
) -> None:
    """Refuse what can't give a patch, with a sentence naming the volume."""
    if not volumes:
        raise DataError("No training volumes were given; add at least one image.")
    if patch_size < 1 or batch_size < 1:
        raise DataError(f"Patch size and batch size must be at least 1, got {patch_size} "
                        f"and {batch_size}.")
    channels = volumes[0].shape[0]
    for n, volume in enumerate(volumes):
        if volume.ndim != 4:
            raise DataError(f"Training volume {n} must be (C, D, H, W), got shape "
                            f"{tuple(volume.shape)}.")
        if volume.shape[0] != channels:
            raise DataError(f"Training volume {n} has {volume.shape[0]} channel(s) but volume 0 "
                            f"has {channels}; all volumes need the same channels.")
        if min(volume.shape[1:]) < patch_size:
            raise DataError(
                f"Training volume {n} of size {tuple(volume.shape[1:])} is smaller than the "
                f"patch size {patch_size}; choose a smaller patch size or pad the volume."
            )
    if masks is not None:
        if len(masks) != len(volumes):
            raise DataError(f"Got {len(masks)} mask(s) for {len(volumes)} volume(s); give one "
                            "mask per volume.")
        for n, (mask, volume) in enumerate(zip(masks, volumes, strict=True)):
            if tuple(mask.shape) != (1, *volume.shape[1:]):
                raise DataError(f"Mask {n} has shape {tuple(mask.shape)} but its volume needs "
                                f"(1, {', '.join(map(str, volume.shape[1:]))}).")


class DevicePatchSampler:
    """Random patches cut on the training device, a whole batch per gather.

    All volumes live in one buffer on the device laid out ``(D, C, H, W)`` and padded
    to a common ``H, W``, so every volume has the same strides and a patch at any
    corner is a slice of one overlapping strided view of the buffer. A batch is then
    a single ``index_select`` of slice starts: no host round trip, no loop over the
    batch. Each slice holds a few planes of a patch rather than the whole patch,
    because on the CPU ``index_select`` spreads slices of that size over all threads
    (about 2x faster on 2 cores than whole-patch slices). The padding costs memory
    only when in-plane sizes differ much; it is never sampled.

    With masks, only corners whose patch centre (corner + ``p // 2``, torchio's
    convention) lies in the mask are drawn; those corners are listed once up front.
    The sampler's own generator makes batches a function of the seed alone, and its
    state is all :meth:`state_dict` needs for an exact resume. Among a ``world`` of
    processes, each draws the corners of the global batch and cuts its own share of them.
    """

    _SLICE_VOXELS = 8192  # below torch's parallel grain size (32768), but not tiny

    def __init__(
        self,
        volumes: list[torch.Tensor],
        patch_size: int,
        batch_size: int,
        *,
        device: torch.device | str,
        seed: int,
        masks: list[torch.Tensor] | None = None,
        mask_share: float = 1.0,
        world: World | None = None,
    ) -> None:
        _check_inputs(volumes, patch_size, batch_size, masks)
        self.device = torch.device(device)
        self.world = world or World(device=self.device)
        self.mask_share = float(mask_share)
        self.patch_size = p = int(patch_size)
        self.batch_size = int(batch_size)
        self.channels = c = int(volumes[0].shape[0])
        self.num_volumes = len(volumes)

        depths = [int(v.shape[1]) for v in volumes]
        h = max(int(v.shape[2]) for v in volumes)
        w = max(int(v.shape[3]) for v in volumes)
        buffer = torch.zeros(sum(depths), c, h, w, device=self.device)
        first = 0
        for volume, depth in zip(volumes, depths, strict=True):
            buffer[first:first + depth, :, :volume.shape[2], :volume.shape[3]] = (
                volume.detach().to(self.device, torch.float32).transpose(0, 1))
            first += depth
        self._stride_d, self._stride_c, self._stride_h = c * h * w, h * w, w

        # A slice is ``planes`` consecutive i-planes of one channel of one patch.
        planes = max((q for q in range(1, p + 1) if p % q == 0 and q * p * p <= self._SLICE_VOXELS),
                     default=1)
        flat = buffer.reshape(-1)
        span = (planes - 1) * self._stride_d + (p - 1) * self._stride_h + p
        self._slices = flat.as_strided((flat.numel() - span + 1, planes, p, p),
                                       (1, self._stride_d, self._stride_h, 1))
        # Offset of every slice of a patch from its corner, in (channel, plane block) order.
        self._slice_steps = (
            torch.arange(c, device=self.device)[:, None] * self._stride_c
            + torch.arange(0, p, planes, device=self.device) * self._stride_d
        ).reshape(-1)

        starts = torch.tensor([0, *np.cumsum(depths)[:-1].tolist()], dtype=torch.int64)
        self._first_plane = starts.to(self.device)
        shapes = torch.tensor([list(v.shape[1:]) for v in volumes], dtype=torch.int64)
        self._ranges = (shapes - p + 1).to(self.device)  # valid corners per axis

        self._candidates: torch.Tensor | None = None
        if masks is not None:
            self._candidates, self._cand_start, self._cand_count = self._mask_corners(
                masks, starts)

        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(seed))

    def _offset(self, first_plane: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                k: torch.Tensor) -> torch.Tensor:
        """Buffer offset of voxel ``(i, j, k)`` of channel 0 of a volume."""
        return (first_plane + i) * self._stride_d + j * self._stride_h + k

    def _mask_corners(
        self, masks: list[torch.Tensor], starts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Buffer offsets of every corner whose patch centre is in the mask, per volume."""
        p, half = self.patch_size, self.patch_size // 2
        found, counts = [], []
        for n, mask in enumerate(masks):
            m = mask[0].to(self.device).bool()
            d, h, w = m.shape
            centres = m[half:half + d - p + 1, half:half + h - p + 1, half:half + w - p + 1]
            i, j, k = centres.nonzero(as_tuple=True)
            if i.numel() == 0:
                raise DataError(
                    f"Mask {n} has no voxel at least {half} voxels away from the border, so "
                    f"no {p}-voxel patch can be centred in it; check the mask or use a "
                    "smaller patch size."
                )
            found.append(self._offset(starts[n].to(self.device), i, j, k))
            counts.append(i.numel())
        count = torch.tensor(counts, dtype=torch.int64, device=self.device)
        return torch.cat(found), torch.cumsum(count, 0) - count, count

    def _draw_corners(self, b: int) -> torch.Tensor:
        """Buffer offset of each of ``b`` patch corners (volume uniform, then corner)."""
        g = self._generator
        v = torch.randint(self.num_volumes, (b,), generator=g, device=self.device)
        # Uniform integers below n as a huge random integer modulo n: the bias is < 2**-50.
        if self._candidates is not None:
            pick = torch.randint(2**62, (b,), generator=g, device=self.device)
            centred = self._candidates[self._cand_start[v] + pick % self._cand_count[v]]
            if self.mask_share >= 1.0:
                return centred
        ijk = torch.randint(2**62, (b, 3), generator=g, device=self.device) % self._ranges[v]
        anywhere = self._offset(self._first_plane[v], *ijk.unbind(1))
        if self._candidates is None:
            return anywhere
        inside = torch.rand(b, generator=g, device=self.device) < self.mask_share
        return torch.where(inside, centred, anywhere)

    def next_batch(self) -> torch.Tensor:
        """Cut ``batch_size`` random patches with one gather on the device."""
        corners = self.world.share(self._draw_corners, self.batch_size)
        index = (corners[:, None] + self._slice_steps).reshape(-1)
        p = self.patch_size
        return self._slices.index_select(0, index).view(self.batch_size, self.channels, p, p, p)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator state: with the same volumes it resumes the exact stream."""
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._generator.set_state(state["generator"].cpu())


class QueuePatchSampler:
    """torchio's ``Queue``: patches cut on the host, then moved to the device.

    For data sets that don't fit on the device. Each volume gives ``samples_per_volume``
    patches per pass; with masks, ``LabelSampler`` centres every patch in the mask.
    torchio draws from torch's global generator, so the sampler keeps a private copy
    of it (seeded at construction) and swaps it in around its own draws: runs repeat
    with the same seed, and the model's random draws don't shift the patches.

    :meth:`state_dict` holds that generator, but the queue's buffer of patches is not
    saved, so a resumed run is repeatable, not identical to an uninterrupted one; use
    :class:`DevicePatchSampler` when an exact resume matters.
    """

    def __init__(
        self,
        volumes: list[torch.Tensor],
        patch_size: int,
        batch_size: int,
        *,
        affines: Sequence[np.ndarray],
        seed: int,
        masks: list[torch.Tensor] | None = None,
        mask_share: float = 1.0,
        samples_per_volume: int = 16,
        queue_length: int = 256,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        pin_memory: bool = False,
    ) -> None:
        import torchio as tio

        _check_inputs(volumes, patch_size, batch_size, masks)
        if len(affines) != len(volumes):
            raise DataError(f"Got {len(affines)} affine(s) for {len(volumes)} volume(s).")
        self.device = torch.device(device)
        subjects = []
        for n, (volume, affine) in enumerate(zip(volumes, affines, strict=True)):
            images = {"image": tio.ScalarImage(tensor=volume.detach().float().cpu(),
                                               affine=np.asarray(affine))}
            if masks is not None:
                images["mask"] = tio.LabelMap(tensor=masks[n].detach().cpu().to(torch.uint8),
                                              affine=np.asarray(affine))
            subjects.append(tio.Subject(**images))
        if masks is None:
            sampler = tio.UniformSampler(patch_size)
        else:
            sampler = tio.LabelSampler(patch_size, label_name="mask",
                                       label_probabilities={0: 1 - mask_share, 1: mask_share})
        self._rng_state = torch.Generator().manual_seed(int(seed)).get_state()
        with self._private_rng():
            queue = tio.Queue(tio.SubjectsDataset(subjects), queue_length, samples_per_volume,
                              sampler, num_workers=num_workers)
            # The queue refills itself whenever it runs dry and ignores the index it is
            # asked for, so an endless index sampler runs one epoch into the next and
            # every batch is full (a partial batch at each epoch's end would break the
            # fixed batch size the train step relies on).
            loader = tio.SubjectsLoader(queue, batch_size=batch_size, num_workers=0,
                                        sampler=range(sys.maxsize), pin_memory=pin_memory)
            self._batches: Iterator[dict] = iter(loader)

    @contextlib.contextmanager
    def _private_rng(self) -> Iterator[None]:
        """Run torchio's draws on this sampler's generator, leaving the global one alone."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            yield
            self._rng_state = torch.get_rng_state()

    def next_batch(self) -> torch.Tensor:
        """The next batch of the queue; it never runs out."""
        import torchio as tio

        with self._private_rng():
            batch = next(self._batches)
        return batch["image"][tio.DATA].to(self.device, torch.float32, non_blocking=True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The private generator only (the queue's patches are not saved)."""
        return {"rng": self._rng_state.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._rng_state = state["rng"].cpu().clone()


def make_patch_sampler(
    kind: str,
    volumes: list[torch.Tensor],
    patch_size: int,
    batch_size: int,
    *,
    affines: Sequence[np.ndarray],
    device: torch.device | str,
    seed: int,
    masks: list[torch.Tensor] | None = None,
    mask_share: float = 1.0,
    samples_per_volume: int = 16,
    queue_length: int = 256,
    pin_memory: bool = False,
    world: World | None = None,
) -> PatchSampler:
    """The sampler ``DataConfig.sampler`` names: ``"device"`` or ``"queue"``.

    ``mask_share``: the share of patches centred in the mask; the rest are drawn
    anywhere (device) or centred outside the mask (queue, torchio's LabelSampler).
    ``pin_memory``: the queue's batches in page-locked memory (faster copies to a GPU).
    ``batch_size`` is this process's share of the batch. Among a ``world`` of processes
    the device sampler cuts each its share of one global draw; the queue, whose host-side
    cutting would be repeated, gets each process its own volumes when there are at least
    as many as processes, and its own random stream (``seed + rank``).
    """
    if kind == "device":
        return DevicePatchSampler(volumes, patch_size, batch_size, device=device, seed=seed,
                                  masks=masks, mask_share=mask_share, world=world)
    if kind == "queue":
        if world is not None and world.size > 1:
            if len(volumes) >= world.size:
                mine = slice(world.rank, None, world.size)
                volumes, affines = volumes[mine], list(affines)[mine]
                masks = masks[mine] if masks is not None else None
            seed += world.rank
        return QueuePatchSampler(volumes, patch_size, batch_size, affines=affines, seed=seed,
                                 masks=masks, mask_share=mask_share,
                                 samples_per_volume=samples_per_volume,
                                 queue_length=queue_length, device=device,
                                 pin_memory=pin_memory)
    raise ConfigError(f"Unknown patch sampler {kind!r}; choose one of {', '.join(SAMPLER_KINDS)}.")
