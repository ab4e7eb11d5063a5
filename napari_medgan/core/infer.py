"""Whole-volume inference by sliding window.

The nets are trained on small cubic patches, but a scan is larger (and of any shape), so
a volume is cut into overlapping patches on a regular grid (:class:`torchio.GridSampler`),
each patch is predicted, and the predictions are stitched back in place by the rules of
:class:`torchio.GridAggregator` (:class:`_Blender`). A net sees less context near a patch's
faces, so plain stitching leaves visible seams; overlapping the patches and weighting each
one with a Hann window (high in the middle, low at the faces) hides them. The Hann weight
at a face is small but not zero, so seam voxels stay slightly off; ``blend="crop"`` with an
overlap of at least twice the net's receptive-field radius is exact for
translation-equivariant nets instead.

Padding: an axis shorter than the patch is padded (evenly on both sides) up to the patch
size with each channel's minimum value, and the padding is cropped away again, so the
output has the input's spatial shape exactly. After normalisation the minimum is the
background (air in CT, no signal in MR), so the padding looks like what surrounds a scan.
Reflection was rejected: it invents mirrored anatomy as context, and it is undefined for
axes of one voxel or pads wider than the axis. Axes at least as long as the patch are not
padded: torchio's grid then puts patches flush with the volume's faces, so border voxels
see the net's own padding, exactly as if the net were applied to the whole volume.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchio as tio

from .errors import ConfigError, DataError, MedGANError

BLEND_MODES = ("hann", "average", "crop")


class InferenceStopped(MedGANError):
    """Sliding-window inference was stopped on request before it finished."""


def overlap_voxels(overlap: float, patch_size: int) -> int:
    """The overlap in voxels: ``round(overlap * patch_size)``, even, and below the patch."""
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(
            f"Patch overlap {overlap!r} is out of range: it is a fraction of the patch "
            "and must be in [0, 1) (for example 0.5)."
        )
    voxels = round(overlap * patch_size)
    voxels -= voxels % 2  # torchio's grid needs an even overlap
    while voxels >= patch_size:
        voxels -= 2
    return max(voxels, 0)


def _check_arguments(volume: torch.Tensor, patch_size: int, batch_size: int, blend: str) -> None:
    if volume.ndim != 4 or min(volume.shape) < 1:
        raise DataError(
            f"Sliding-window inference needs a (C, D, H, W) volume with no empty axis, "
            f"got shape {tuple(volume.shape)}."
        )
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ConfigError(f"Patch size must be a positive whole number, got {patch_size!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"Batch size must be a positive whole number, got {batch_size!r}.")
    if blend not in BLEND_MODES:
        raise ConfigError(f"Blend mode {blend!r} is unknown; use one of {', '.join(BLEND_MODES)}.")


def _pad(volume: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, list[int]]:
    """Pad short axes to the patch with each channel's minimum; return it and the offsets.

    A volume with no short axis comes back as it is, not copied.
    """
    shape = volume.shape[1:]
    before = [max(0, patch_size - size) // 2 for size in shape]
    padded_shape = [max(patch_size, size) for size in shape]
    if list(shape) == padded_shape:
        return volume, before
    minimum = volume.reshape(volume.shape[0], -1).amin(dim=1)
    padded = minimum.view(-1, 1, 1, 1).expand(volume.shape[0], *padded_shape).clone()
    (i, j, k), (d, h, w) = before, shape
    padded[:, i : i + d, j : j + h, k : k + w] = volume
    return padded, before


def _hann_window(patch_size: int) -> torch.Tensor:
    """torchio's GridAggregator window: a Hann curve of p + 2 points without its zero ends,
    per axis, multiplied into a cube."""
    curve = torch.hann_window(patch_size + 2, periodic=False)[1:-1]
    return curve.view(-1, 1, 1) * curve.view(1, -1, 1) * curve.view(1, 1, -1)


class _Blender:
    """Stitches patch predictions into one output, in place (torchio GridAggregator's rules).

    torchio's aggregator keeps one weight map per output channel and divides into a new
    tensor at the end; here the weights are one channel and the division is in place, so
    the result costs ``C_out + 1`` volumes of float32 instead of ``3 C_out``.
    """

    def __init__(self, shape: tuple[int, ...], patch_size: int, overlap: int, blend: str):
        self.shape, self.patch_size, self.overlap, self.blend = shape, patch_size, overlap, blend
        self.output: torch.Tensor | None = None
        self.weight = None if blend == "crop" else torch.zeros(1, *shape)
        self.window = _hann_window(patch_size) if blend == "hann" else torch.ones(1)

    def add(self, batch: torch.Tensor, corners: list[tuple[int, int, int]]) -> None:
        if self.output is None:
            self.output = torch.zeros(batch.shape[1], *self.shape)
        p = self.patch_size
        for patch, corner in zip(batch, corners, strict=True):
            if self.blend == "crop":
                self._put_central(patch, corner)
                continue
            region = tuple(slice(c, c + p) for c in corner)
            self.output[(slice(None), *region)].add_(patch * self.window)
            self.weight[(slice(None), *region)].add_(self.window)

    def _put_central(self, patch: torch.Tensor, corner: tuple[int, int, int]) -> None:
        """Half the overlap is cut from each face, except at the volume's own faces."""
        half = self.overlap // 2
        inner, region = [], []
        for start, size in zip(corner, self.shape, strict=True):
            low = half if start > 0 else 0
            high = half if start + self.patch_size != size else 0
            inner.append(slice(low, self.patch_size - high))
            region.append(slice(start + low, start + self.patch_size - high))
        self.output[(slice(None), *region)] = patch[(slice(None), *inner)]

    def result(self) -> torch.Tensor:
        if self.weight is not None:
            self.output.div_(self.weight)
        return self.output


def sliding_window(
    volume: torch.Tensor,
    predict: Callable[[torch.Tensor], torch.Tensor],
    patch_size: int,
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    blend: str = "hann",
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Apply ``predict`` to a whole volume, patch by patch, and stitch the results.

    Args:
        volume: ``(C, D, H, W)`` already normalised; any spatial size, also smaller than
            the patch.
        predict: maps a batch ``(B, C, p, p, p)`` on ``device`` to ``(B, C_out, p, p, p)``;
            ``C_out`` may differ from ``C`` (e.g. class logits). Put a net in eval mode first.
        patch_size: edge ``p`` of the cubic patches the net expects.
        overlap: fraction of the patch shared by neighbouring patches, in ``[0, 1)``;
            see :func:`overlap_voxels`.
        batch_size: patches per call of ``predict``.
        device: where each batch is predicted; results come back to the CPU.
        blend: how overlapping predictions are combined: ``"hann"`` (weighted towards patch
            centres; hides seams), ``"average"``, or ``"crop"`` (each voxel from one patch,
            at least half the overlap inside it; exact for a translation-equivariant net
            whose receptive-field radius is at most half the overlap).
        progress: called ``(done_patches, total_patches)`` after every batch.
        stop: checked before every batch; when it returns True, :class:`InferenceStopped`
            is raised.

    Returns:
        ``(C_out, D, H, W)`` float32 on the CPU, with the input's spatial shape.

    Example:
        >>> net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
        >>> sliding_window(torch.rand(1, 40, 30, 9), net, 16).shape
        torch.Size([2, 40, 30, 9])
    """
    _check_arguments(volume, patch_size, batch_size, blend)
    device = torch.device(device)
    overlap_vox = overlap_voxels(overlap, patch_size)
    padded, offset = _pad(volume.detach().float().cpu(), patch_size)

    # torchio's grid: where the patches go (each corner's slices are cut here, without
    # torchio's per-patch Subject copies)
    subject = tio.Subject(image=tio.ScalarImage(tensor=padded))
    grid = tio.GridSampler(subject, patch_size=patch_size, patch_overlap=overlap_vox)
    corners = [tuple(int(c) for c in location[:3]) for location in grid.locations]
    blender = _Blender(tuple(padded.shape[1:]), patch_size, overlap_vox, blend)
    total, p = len(corners), patch_size

    with torch.no_grad():
        for start in range(0, total, batch_size):
            if stop is not None and stop():
                raise InferenceStopped(
                    f"Inference was stopped after {start} of {total} patches; nothing was written."
                )
            chunk = corners[start : start + batch_size]
            batch = torch.stack([padded[:, i : i + p, j : j + p, k : k + p]
                                 for i, j, k in chunk]).to(device)
            output = predict(batch)
            if (
                output.ndim != 5
                or output.shape[0] != batch.shape[0]
                or output.shape[2:] != batch.shape[2:]
            ):
                raise RuntimeError(
                    f"The predictor turned a batch of shape {tuple(batch.shape)} into "
                    f"{tuple(output.shape)}; it must keep the batch size and patch shape."
                )
            blender.add(output.detach().float().cpu(), chunk)
            if progress is not None:
                progress(start + len(chunk), total)

    result = blender.result()
    (i, j, k), (d, h, w) = offset, volume.shape[1:]
    if result.shape[1:] == (d, h, w):
        return result
    return result[:, i : i + d, j : j + h, k : k + w].contiguous()
