"""Partners of volumes: paired targets, label maps and masks, matched by name, on the same grid.

Pairs are matched by volume name: the same name, or the name with one of the usual
partner endings (``_seg``, ``_label``, ``_labels``, ``_mask``) when that is unambiguous.
When no name matches at all, partners are taken in order (and a warning shows the
pairing); when some names match and others don't, the pairing is refused with both
lists, since a partial match is how ``a`` ends up paired with ``lab/b`` while
``lab/a`` exists. A partner must lie on its volume's voxel grid (:func:`check_same_grid`,
the one grid check of training, evaluation and apply's masks). Resampling a partner onto
its volume's grid is an explicit choice (``resample_pairs``), except when the volume
itself was resampled to the common spacing: then its partner follows.

Label maps keep the values they are given (0/255 masks, atlas codes): the model's
classes are the values present, in order (:func:`label_values`), and results are
written back in those values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio

from ..errors import DataError, MedGANWarning
from .io import find_volume_files, read_volume, volume_name
from .volume import Volume

#: Endings a partner's name may add to its volume's name (``ct_01`` ↔ ``ct_01_seg``).
PARTNER_SUFFIXES = ("_seg", "_label", "_labels", "_mask")
GRID_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-4
_LISTED = 6  # names shown per list in a refusal


@dataclass(frozen=True)
class Pairing:
    """The partner of each volume, in the volumes' order, and how they were matched."""

    volumes: list[Path]
    partners: list[Path]
    matched_by: str  # "name" or "order"

    def record(self) -> dict[str, Any]:
        """JSON-ready, for the card's data summary."""
        return {"matched_by": self.matched_by,
                "pairs": [[str(v), str(p)] for v, p in zip(self.volumes, self.partners,
                                                           strict=True)]}


def match_pairs(images: list[Path], partner_paths: str | Path | Iterable[str | Path],
                what: str) -> Pairing:
    """Pair each of ``images`` with its ``what`` (target, label map, mask) in ``partner_paths``."""
    partners = find_volume_files(partner_paths)
    names = [volume_name(p) for p in partners]

    def candidates(image: Path) -> list[Path]:
        name = volume_name(image)
        exact = [p for p, n in zip(partners, names, strict=True) if n == name]
        endings = {name + suffix for suffix in PARTNER_SUFFIXES}
        return exact or [p for p, n in zip(partners, names, strict=True) if n in endings]

    found = [candidates(image) for image in images]
    chosen = [c[0] for c in found if len(c) == 1]
    if len(chosen) == len(images) and len(set(chosen)) == len(chosen):
        return Pairing(list(images), chosen, "name")
    if not any(found):  # names unrelated throughout: by order, shown
        if len(partners) != len(images):
            raise DataError(
                f"Got {len(images)} volume(s) but {len(partners)} {what}(s), and their file "
                f"names don't match; give one {what} per volume, with the volume's file name "
                "or in the same order."
            )
        pairing = Pairing(list(images), partners, "order")
        warnings.warn(f"Paired each {what} with a volume by order, as their names differ: "
                      f"{_pairs_text(pairing)}.", MedGANWarning, stacklevel=2)
        return pairing
    problems = [f"{volume_name(i)} has {'no' if not c else len(c)} {what}(s) of its name"
                + (f" ({_names(c)})" if len(c) > 1 else "")
                for i, c in zip(images, found, strict=True) if len(c) != 1]
    shared = {p for p in chosen if chosen.count(p) > 1}
    problems += [f"{p.name} matches more than one volume" for p in sorted(shared)]
    raise DataError(
        f"Can't pair the {what}s with the volumes by name: {'; '.join(problems)}. Volumes: "
        f"{_names(images)}; {what}s: {_names(partners)}. Give each volume one {what} with "
        f"its file name (or that name ending in {', '.join(PARTNER_SUFFIXES)})."
    )


def grid_differences(moving: Volume, fixed: Volume) -> list[str]:
    """How the voxel grid of ``moving`` differs from that of ``fixed`` (empty: the same grid)."""
    differences = []
    if moving.spatial_shape != fixed.spatial_shape:
        differences.append(f"shape {moving.spatial_shape} against {fixed.spatial_shape}")
    if not np.allclose(moving.spacing, fixed.spacing, atol=GRID_TOLERANCE_MM):
        differences.append(f"spacing {mm_text(moving.spacing)} against {mm_text(fixed.spacing)}")
    if not np.allclose(moving.affine[:3, 3], fixed.affine[:3, 3], atol=GRID_TOLERANCE_MM):
        differences.append(f"origin {_point(moving.affine[:3, 3])} mm against "
                           f"{_point(fixed.affine[:3, 3])} mm")
    if not np.allclose(moving.direction, fixed.direction, atol=DIRECTION_TOLERANCE):
        differences.append(f"direction {np.round(moving.direction, 4).tolist()} against "
                           f"{np.round(fixed.direction, 4).tolist()}")
    return differences


def check_same_grid(moving: Volume, fixed: Volume, moving_source: object, fixed_source: object,
                    *, what: str, advice: str) -> None:
    """Refuse ``moving`` (the ``what`` of ``fixed``) unless both share one voxel grid."""
    differences = grid_differences(moving, fixed)
    if differences:
        raise DataError(f"The {what} {moving_source} ({'; '.join(differences)}) is not on the "
                        f"voxel grid of {fixed_source}; {advice}.")


def load_partner(
    path: Path,
    image: Volume,
    image_path: Path,
    *,
    what: str,
    check: Callable[[Volume, str], object],
    nearest: bool = False,
    follow: bool = False,
    resample: bool = False,
    irregular_series: str = "refuse",
) -> Volume:
    """Read the partner of ``image``, check it with ``check``, bring it onto ``image``'s grid.

    ``follow``: the image was resampled to the common spacing, so its partner is too.
    ``nearest``: label maps and masks are resampled with nearest neighbour.
    """
    partner = read_volume(path, irregular_series=irregular_series)
    check(partner, str(path))
    if not (follow or resample):
        check_same_grid(partner, image, path, image_path, what=what,
                        advice="register them, or allow resampling onto the volume's grid "
                               "(--resample-pairs)")
        return partner
    if not grid_differences(partner, image):
        return partner
    if not follow:
        warnings.warn(f"{path} was resampled onto the grid of {image_path}.", MedGANWarning,
                      stacklevel=2)
    kind = tio.LabelMap if nearest else tio.ScalarImage
    moved = tio.Resample(tio.ScalarImage(tensor=image.tensor, affine=image.affine))(
        kind(tensor=partner.tensor, affine=partner.affine))
    return Volume(moved.data.float(), moved.affine, partner.name)


def check_label_map(volume: Volume, source: str) -> None:
    """One whole number ≥ 0 per voxel: a class, 0 being background."""
    tensor = volume.tensor
    if volume.tensor.shape[0] != 1:
        raise DataError(f"The label map {source} has {tensor.shape[0]} channels; give one "
                        "integer label per voxel.")
    if not torch.isfinite(tensor).all() or not torch.equal(tensor, tensor.round()):
        raise DataError(
            f"The label map {source} holds non-integer values; a label map gives each voxel a "
            "whole-number class (0 = background). Was an intensity image given as labels?"
        )
    if tensor.min() < 0:
        raise DataError(f"The label map {source} holds negative labels; use 0, 1, 2, ...")


def label_values(volumes: list[Volume]) -> list[int]:
    """The label values present, sorted, 0 (background) always first: class k is value k."""
    present = torch.unique(torch.cat([v.tensor.flatten() for v in volumes]))
    return sorted({0, *(int(v) for v in present.tolist())})


def to_classes(labels: torch.Tensor, values: list[int]) -> torch.Tensor:
    """Label values → class indices (the position of each value in ``values``)."""
    return torch.bucketize(labels, torch.tensor(values, dtype=labels.dtype)).to(labels.dtype)


def _pairs_text(pairing: Pairing) -> str:
    shown = [f"{v.name} ↔ {p.name}" for v, p in zip(pairing.volumes, pairing.partners,
                                                    strict=True)][:_LISTED]
    more = len(pairing.volumes) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _names(paths: list[Path]) -> str:
    shown = [p.name for p in paths[:_LISTED]]
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def mm_text(spacing) -> str:
    """``0.5 x 0.5 x 3 mm``."""
    return " x ".join(f"{s:.4g}" for s in spacing) + " mm"


def _point(xyz) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in xyz) + ")"
