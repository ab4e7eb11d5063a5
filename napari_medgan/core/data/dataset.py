"""Turn the user's training paths into checked volumes on one voxel grid spacing.

Everything that would make training fail later (a 2D slice, NaNs, mismatched spacings,
a patch bigger than a volume, a mask that does not fit its volume) is refused here,
before any net is built, with a message naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio

from ..errors import ConfigError, DataError, MedGANWarning
from .io import check_volume, find_volume_files, read_volume
from .pairs import check_same_grid, match_pairs, mm_text
from .volume import Volume

_SPACING_TOLERANCE_MM = 1e-3


@dataclass
class TrainingData:
    """Checked training volumes, their optional masks and a JSON-ready summary for the card.

    ``masks`` are bool tensors ``(1, D, H, W)``, one per volume, in the same order.
    ``summary`` lists the files, shapes, spacings and which files were resampled.
    """

    volumes: list[Volume]
    masks: list[torch.Tensor] | None
    summary: dict[str, Any]


def load_training_volumes(
    paths: str | Path | Iterable[str | Path],
    *,
    patch_size: int,
    masks: str | Path | Iterable[str | Path] | None = None,
    spacing_mismatch: str = "resample",
    irregular_series: str = "refuse",
) -> TrainingData:
    """Read, check and align the training volumes (and masks) found under ``paths``.

    Volumes whose spacing differs from the first one's are resampled onto it with a
    warning (``spacing_mismatch="resample"``) or refused (``"refuse"``). DICOM series
    with missing slices: see :func:`.series.read_series`.
    """
    if spacing_mismatch not in ("resample", "refuse"):
        raise ConfigError(f"spacing_mismatch is {spacing_mismatch!r}; choose resample or refuse.")
    files = find_volume_files(paths)
    mask_pairing = match_pairs(files, masks, "mask") if masks else None
    mask_files = mask_pairing.partners if mask_pairing else None
    volumes, volume_masks, resampled = [], [], []
    for index, file in enumerate(files):
        volume = read_volume(file, irregular_series=irregular_series)
        check_volume(volume, str(file))
        mask = (_read_mask(mask_files[index], volume, file, irregular_series) if mask_files
                else None)
        if volumes and not np.allclose(volume.spacing, volumes[0].spacing,
                                       atol=_SPACING_TOLERANCE_MM):
            volume, mask = _match_spacing(volume, mask, file, files[0], volumes[0].spacing,
                                          spacing_mismatch)
            resampled.append(str(file))
        volumes.append(volume)
        volume_masks.append(mask)
    _check_patch_fits(volumes, files, patch_size)
    summary = {
        "files": [str(f) for f in files],
        "masks": [str(f) for f in mask_files] if mask_files else None,
        "pairs": {"masks": mask_pairing.record()} if mask_pairing else {},
        "shapes": [list(v.spatial_shape) for v in volumes],
        "spacings": [list(v.spacing) for v in volumes],
        "resampled": resampled,
    }
    return TrainingData(volumes, volume_masks if mask_files else None, summary)


def _read_mask(mask_file: Path, volume: Volume, volume_file: Path,
               irregular_series: str) -> torch.Tensor:
    mask = read_volume(mask_file, irregular_series=irregular_series)
    check_same_grid(mask, volume, mask_file, volume_file, what="mask",
                    advice="resample the mask onto the volume first")
    binary = mask.tensor[:1] > 0
    if not binary.any():
        raise DataError(f"The mask {mask_file} is empty (no voxel is set); patches need a region.")
    return binary


def _match_spacing(
    volume: Volume,
    mask: torch.Tensor | None,
    file: Path,
    first_file: Path,
    spacing: tuple[float, float, float],
    policy: str,
) -> tuple[Volume, torch.Tensor | None]:
    """Resample ``volume`` (and its mask, nearest neighbour) onto ``spacing``, or refuse."""
    ours, theirs = mm_text(volume.spacing), mm_text(spacing)
    if policy == "refuse":
        raise DataError(
            f"{file} has voxel spacing {ours} but {first_file} has {theirs}; resample them to "
            f"one spacing or allow resampling."
        )
    warnings.warn(
        f"{file} has voxel spacing {ours}, unlike {first_file} ({theirs}); it was resampled "
        f"to {theirs}.",
        MedGANWarning,
        stacklevel=3,
    )
    subject = tio.Subject(image=tio.ScalarImage(tensor=volume.tensor, affine=volume.affine))
    if mask is not None:  # a LabelMap is resampled with nearest neighbour
        subject.add_image(tio.LabelMap(tensor=mask.to(torch.uint8), affine=volume.affine), "mask")
    subject = tio.Resample(spacing)(subject)
    resampled = Volume(subject["image"].data.float(), subject["image"].affine, volume.name)
    return resampled, (subject["mask"].data > 0 if mask is not None else None)


def _check_patch_fits(volumes: list[Volume], files: list[Path], patch_size: int) -> None:
    smallest = min(min(v.spatial_shape) for v in volumes)
    for volume, file in zip(volumes, files, strict=True):
        if patch_size > min(volume.spatial_shape):
            fits = 1 << (smallest.bit_length() - 1)
            advice = (f"use a patch size of {fits} or less" if fits >= 8 else
                      "this volume is too small for the smallest patch size (8)")
            raise DataError(
                f"The patch size {patch_size} does not fit in {file} (shape "
                f"{volume.spatial_shape}); {advice}."
            )

