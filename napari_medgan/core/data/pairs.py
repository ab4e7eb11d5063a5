"""Partners of training volumes: paired targets, label maps and masks on the same grid.

Pairs are matched by file name when every volume has a partner of the same name,
otherwise by order; a partner must lie on its volume's voxel grid. Resampling a
partner onto its volume's grid is an explicit choice (``resample_pairs``), except
when the volume itself was resampled to the common spacing: then its partner follows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torchio as tio

from ..errors import DataError, MedGANWarning
from .io import check_volume, find_volume_files, read_volume, suffix_of
from .volume import Volume

_GRID_TOLERANCE_MM = 1e-3


def _stem(path: Path | Volume) -> str:
    if isinstance(path, Volume):
        return path.name
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def match_pairs(images: list[Path], partner_paths, what: str) -> list[Path]:
    """The partner file of each image, in the images' order."""
    partners = find_volume_files(partner_paths)
    by_name = {_stem(p): p for p in partners}
    if len(by_name) == len(partners) and all(_stem(i) in by_name for i in images):
        return [by_name[_stem(i)] for i in images]
    if len(partners) != len(images):
        raise DataError(
            f"Got {len(images)} volume(s) but {len(partners)} {what}(s), and their file names "
            f"don't match; give one {what} per volume, with the same file name or in the "
            "same order."
        )
    return partners


def load_partner(
    path: Path,
    image: Volume,
    image_path: Path,
    *,
    what: str,
    labels: bool = False,
    follow: bool = False,
    resample: bool = False,
) -> Volume:
    """Read the partner of ``image`` and bring it onto ``image``'s grid, or refuse.

    ``follow``: the image was resampled to the common spacing, so its partner is too.
    ``labels``: integer-valued label maps, resampled with nearest neighbour.
    """
    partner = read_volume(path)
    check_volume(partner, str(path)) if not labels else _check_labels(partner, path)
    same_grid = partner.spatial_shape == image.spatial_shape and np.allclose(
        partner.affine, image.affine, atol=_GRID_TOLERANCE_MM)
    if same_grid:
        return partner
    if not (follow or resample):
        raise DataError(
            f"The {what} {path} (shape {partner.spatial_shape}, spacing "
            f"{_mm(partner.spacing)}) is not on the voxel grid of {image_path} (shape "
            f"{image.spatial_shape}, spacing {_mm(image.spacing)}); register them, or allow "
            "resampling onto the volume's grid (--resample-pairs)."
        )
    if not follow:
        warnings.warn(f"{path} was resampled onto the grid of {image_path}.", MedGANWarning,
                      stacklevel=2)
    kind = tio.LabelMap if labels else tio.ScalarImage
    moved = tio.Resample(tio.ScalarImage(tensor=image.tensor, affine=image.affine))(
        kind(tensor=partner.tensor, affine=partner.affine))
    return Volume(moved.data.float(), moved.affine, partner.name)


def _check_labels(volume: Volume, path: Path) -> None:
    tensor = volume.tensor
    if volume.tensor.shape[0] != 1:
        raise DataError(f"The label map {path} has {tensor.shape[0]} channels; give one "
                        "integer label per voxel.")
    if not torch.isfinite(tensor).all() or not torch.equal(tensor, tensor.round()):
        raise DataError(
            f"The label map {path} holds non-integer values; a label map gives each voxel a "
            "whole-number class (0 = background). Was an intensity image given as labels?"
        )
    if tensor.min() < 0:
        raise DataError(f"The label map {path} holds negative labels; use 0, 1, 2, ...")


def label_count(volumes: list[Volume]) -> int:
    """Number of classes, background included: the largest label + 1."""
    return int(max(v.tensor.max() for v in volumes).item()) + 1


def _mm(spacing) -> str:
    return " x ".join(f"{s:.4g}" for s in spacing) + " mm"
