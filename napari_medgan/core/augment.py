"""DiffAugment in 3D (Zhao et al., 2020): differentiable augmentations of a critic's inputs.

A discriminator trained on few volumes memorises them and its gradients stop helping the
generator. DiffAugment transforms *every* input of the discriminator — real patches and
generated ones alike, in its own step and in the generator's — with the same random,
differentiable transforms, so the discriminator can't memorise exact patches while the
generator still gets gradients through the transform. Each sample draws its own
parameters from the task's generator, so a resumed run draws the same ones.

The transforms run in a fixed order whatever the order of the names: intensity, flip,
translation, cutout (so the cutout box holds the background, not a shifted value).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .config import Augmentation

#: The normalised value of background (air, outside the head): intensities map to [-1, 1].
BACKGROUND = -1.0
#: intensity: x ↦ (x − mean) · contrast + mean + brightness, per sample
BRIGHTNESS = 0.1  # brightness ~ U(−0.1, 0.1): 5 % of the normalised range
CONTRAST = (0.8, 1.2)  # contrast ~ U(0.8, 1.2)
#: translation: each axis shifted by a whole number of voxels up to this share of the side
TRANSLATION_SHARE = 1 / 8
#: cutout: a box with sides this share of the patch's set to the background
CUTOUT_SHARE = 1 / 2


def diff_augment(x: torch.Tensor, names: Sequence[Augmentation],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` ``(B, C, D, H, W)`` with the named augmentations applied, each sample drawn apart.

    Unknown names are refused by the config's validation; an empty ``names`` returns ``x``.
    """
    for name, augment in _PIPELINE.items():
        if name in names:
            x = augment(x, generator)
    return x


def _uniform(shape: tuple[int, ...], low: float, high: float, like: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    draw = torch.rand(shape, generator=generator, device=like.device)
    return (low + (high - low) * draw).to(like.dtype)


def intensity(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random contrast about each sample's mean, then a random brightness shift."""
    shape = (x.shape[0], *([1] * (x.ndim - 1)))
    contrast = _uniform(shape, *CONTRAST, x, generator)
    brightness = _uniform(shape, -BRIGHTNESS, BRIGHTNESS, x, generator)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return (x - mean) * contrast + mean + brightness


def flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each spatial axis of each sample mirrored with probability ½ (not for anatomy: L ≠ R)."""
    flips = torch.rand(x.shape[0], 3, generator=generator, device=x.device) < 0.5
    for axis in range(3):
        chosen = flips[:, axis].view(-1, *([1] * (x.ndim - 1)))
        x = torch.where(chosen, x.flip(2 + axis), x)
    return x


def translation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each sample shifted by up to ``TRANSLATION_SHARE`` of the side per axis; the voxels
    shifted in are background."""
    sides = x.shape[2:]
    margin = max(1, int(min(sides) * TRANSLATION_SHARE))
    shifts = torch.randint(-margin, margin + 1, (x.shape[0], 3), generator=generator,
                           device=x.device).tolist()
    padded = F.pad(x, (margin,) * 6, value=BACKGROUND)
    moved = torch.stack([
        sample[:, margin - d: margin - d + sides[0], margin - h: margin - h + sides[1],
               margin - w: margin - w + sides[2]]
        for sample, (d, h, w) in zip(padded, shifts, strict=True)
    ])
    return _in_layout_of(moved, x)


def cutout(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A box with sides ``CUTOUT_SHARE`` of the patch's, inside it, set to the background."""
    sides = torch.tensor([int(s * CUTOUT_SHARE) for s in x.shape[2:]], device=x.device)
    room = torch.tensor(x.shape[2:], device=x.device) - sides + 1
    starts = (torch.rand(x.shape[0], 3, generator=generator, device=x.device) * room).floor()
    box = box_mask(starts[:, None], sides.expand(x.shape[0], 1, 3), x.shape[2:])
    return torch.where(box, torch.full((), BACKGROUND, dtype=x.dtype, device=x.device), x)


def box_mask(starts: torch.Tensor, sides: torch.Tensor,
             size: Sequence[int]) -> torch.Tensor:
    """``(B, 1, *size)`` bool: inside any of the ``K`` boxes of ``starts``/``sides`` ``(B, K, 3)``
    (voxel corners and side lengths per axis)."""
    inside = []
    for axis, length in enumerate(size):
        coords = torch.arange(length, device=starts.device, dtype=torch.float32)
        inside.append((coords >= starts[..., axis, None])
                      & (coords < (starts + sides)[..., axis, None]))  # (B, K, length)
    boxes = (inside[0][..., :, None, None] & inside[1][..., None, :, None]
             & inside[2][..., None, None, :])
    return boxes.any(1, keepdim=True)


def _in_layout_of(result: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``result`` in ``x``'s memory layout (channels_last_3d stays so for the critic)."""
    if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return result.contiguous(memory_format=torch.channels_last_3d)
    return result


_PIPELINE = {"intensity": intensity, "flip": flip, "translation": translation,
             "cutout": cutout}
