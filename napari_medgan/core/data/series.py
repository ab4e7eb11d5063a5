"""DICOM series: which files make one volume, and whether their slices form a regular grid.

A DICOM volume is a folder of slice files. Three things go wrong silently with a plain
``ImageSeriesReader``: a series with missing slices or irregular spacing is read with one
averaged spacing (slices after a gap sit millimetres off), a folder holding two series
gives only one of them, and a stray ``.dcm`` makes a folder of other volumes look like a
series. This module refuses each with a sentence naming the files.

A folder with several series is read one series at a time, named with its UID after the
folder: ``FOLDER::SERIES_UID`` (:data:`SEPARATOR`); the error for an ambiguous folder lists
the series and their UIDs.

>>> pick_series("scans/patient1::1.2.826.0.1.3680043.2.1125.1")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import DataError, MedGANWarning

#: Joins a folder and the UID of one of its series: ``FOLDER::SERIES_UID``.
SEPARATOR = "::"
#: How series with missing slices or uneven spacing are handled: refused, or resampled.
IRREGULAR_POLICIES = ("refuse", "resample")
#: A gap may differ from the series' slice spacing by this share of it (rounding of positions).
_GAP_TOLERANCE = 0.01
_ORIENTATION_TOLERANCE = 1e-4
_SAME_POSITION_MM = 1e-3
_LISTED = 3  # gaps, files or series named in a message before "and N more"


@dataclass(frozen=True)
class Series:
    """One DICOM series of a folder: its UID, description and slice files (as GDCM sorts them)."""

    folder: Path
    uid: str
    description: str
    files: tuple[str, ...]

    @property
    def path(self) -> Path:
        """The path that names this series alone: ``FOLDER::UID``."""
        return Path(f"{self.folder}{SEPARATOR}{self.uid}")

    @property
    def label(self) -> str:
        return f"{self.folder} (UID {self.uid})"


def split_series_path(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``FOLDER::UID`` → ``(FOLDER, UID)``; any other path → ``(path, None)``."""
    text = os.fspath(path)
    folder, separator, uid = text.rpartition(SEPARATOR)
    if not separator or not uid or Path(text).exists():
        return Path(text), None
    return Path(folder), uid


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder``: ``*.dcm`` or files with the ``DICM`` preamble."""
    found = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or not child.is_file():
            continue
        if child.suffix.lower() == ".dcm":
            found.append(child)
            continue
        with open(child, "rb") as handle:
            handle.seek(128)
            if handle.read(4) == b"DICM":
                found.append(child)
    return found


def refuse_mixed_folder(folder: Path, dicom: Sequence[Path], volumes: Sequence[Path]) -> None:
    """A folder is a DICOM series or a folder of volume files, never both at once."""
    if dicom and volumes:
        raise DataError(
            f"The folder {folder} mixes {len(volumes)} volume file(s) ({_names(volumes)}) "
            f"with {len(dicom)} DICOM file(s) ({_names(dicom)}); move one kind to its own "
            "folder, so that it is clear which volumes are meant."
        )


def find_series(folder: Path) -> list[Series]:
    """Every DICOM series directly in ``folder``, with its slice files."""
    series = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        try:
            description = _header(files[0]).get("0008|103e", "").strip()
        except RuntimeError:  # unreadable: read_series says so, naming the file
            description = ""
        series.append(Series(folder, uid, description, tuple(files)))
    return series


def pick_series(path: str | os.PathLike) -> Series:
    """The one series ``path`` names: a folder holding one series, or ``FOLDER::UID``."""
    folder, uid = split_series_path(path)
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist or is not a folder; check the path.")
    found = find_series(folder)
    if not found:
        raise DataError(f"The folder {folder} holds no readable DICOM series; check that its "
                        "DICOM files are complete (not cut short or renamed other files).")
    if uid is not None:
        chosen = [s for s in found if s.uid == uid]
        if not chosen:
            raise DataError(f"The folder {folder} holds no series {uid}; it holds: "
                            f"{_listing(found)}.")
        return chosen[0]
    if len(found) > 1:
        raise DataError(
            f"The folder {folder} holds {len(found)} DICOM series: {_listing(found)}; pick one "
            f"as FOLDER{SEPARATOR}SERIES_UID (e.g. {found[0].path}) or move each series to its "
            "own sub-folder."
        )
    return found[0]


def read_series(series: Series, irregular: str = "refuse") -> sitk.Image:
    """The series as one image whose slices lie where the files say.

    Missing slices or uneven spacing are refused, naming the gaps, unless ``irregular``
    is ``"resample"``: then the slices are interpolated linearly onto a regular grid with
    the series' usual slice spacing, and a :class:`MedGANWarning` says so.
    """
    if irregular not in IRREGULAR_POLICIES:
        raise DataError(f"irregular_series is {irregular!r}; choose refuse or resample.")
    files, offsets = _ordered_slices(series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's own nonuniformity warning: ours below
    try:
        image = reader.Execute()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if offsets is None or len(files) < 2:
        return image
    gaps = np.diff(offsets)
    spacing = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - spacing) > _GAP_TOLERANCE * spacing)
    if uneven.size == 0:
        image.SetSpacing((*image.GetSpacing()[:2], spacing))
        return image
    described = _describe_gaps(files, offsets, uneven, spacing)
    if irregular == "refuse":
        raise DataError(
            f"The DICOM series in {series.label} has missing slices or irregular spacing: slices "
            f"are {spacing:g} mm apart, but {described}. Read as is, the slices after a gap "
            f"would be misplaced; add the missing slices, or set data.irregular_series: "
            f"resample to interpolate a regular {spacing:g} mm grid."
        )
    warnings.warn(
        f"The DICOM series in {series.label} has irregular slice spacing ({described}); it was "
        f"resampled onto a regular {spacing:g} mm grid.", MedGANWarning, stacklevel=3)
    return _regular_grid(image, offsets, spacing)


def _ordered_slices(series: Series) -> tuple[list[str], np.ndarray | None]:
    """Slice files sorted along the slice normal, and their offsets along it in mm.

    Without patient geometry in the headers there are no offsets: the files stay in
    GDCM's order.
    """
    headers = [_header(f) for f in series.files]
    try:
        orientations = np.array([_numbers(h["0020|0037"], 6) for h in headers])
        positions = np.array([_numbers(h["0020|0032"], 3) for h in headers])
    except (KeyError, ValueError):  # no patient geometry (e.g. a secondary capture): as read
        return list(series.files), None
    odd = np.flatnonzero(np.abs(orientations - orientations[0]).max(1) > _ORIENTATION_TOLERANCE)
    if odd.size:
        raise DataError(
            f"The slices of the DICOM series in {series.label} have different orientations "
            f"({Path(series.files[0]).name} and {Path(series.files[odd[0]]).name}); it is not "
            "one volume."
        )
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    offsets = positions @ normal
    order = np.argsort(offsets, kind="stable")
    files, offsets = [series.files[i] for i in order], offsets[order]
    same = np.flatnonzero(np.diff(offsets) < _SAME_POSITION_MM)
    if same.size:
        i = same[0]
        raise DataError(
            f"The DICOM series in {series.label} has two slices at the same position "
            f"({Path(files[i]).name} and {Path(files[i + 1]).name}); it may hold two "
            "acquisitions: keep one of them."
        )
    return files, offsets


def _describe_gaps(files: list[str], offsets: np.ndarray, uneven: np.ndarray,
                   spacing: float) -> str:
    parts = []
    for i in uneven[:_LISTED]:
        gap = offsets[i + 1] - offsets[i]
        missing = round(gap / spacing) - 1
        note = f", about {missing} missing slice(s)" if missing >= 1 else ""
        parts.append(
            f"{Path(files[i]).name} (at {offsets[i]:g} mm) and {Path(files[i + 1]).name} (at "
            f"{offsets[i + 1]:g} mm) are {gap:g} mm apart{note}")
    more = f", and {uneven.size - _LISTED} more gap(s)" if uneven.size > _LISTED else ""
    return "; ".join(parts) + more


def _regular_grid(image: sitk.Image, offsets: np.ndarray, spacing: float) -> sitk.Image:
    """Linear interpolation between the two nearest slices, onto slices ``spacing`` apart."""
    slices = sitk.GetArrayFromImage(image).astype(np.float32)  # (k, j, i)
    relative = offsets - offsets[0]
    count = int(np.floor(relative[-1] / spacing + _GAP_TOLERANCE)) + 1
    wanted = np.minimum(np.arange(count) * spacing, relative[-1])
    below = np.clip(np.searchsorted(relative, wanted, side="right") - 1, 0, len(relative) - 2)
    weight = ((wanted - relative[below]) / (relative[below + 1] - relative[below]))
    weight = weight.reshape(-1, *([1] * (slices.ndim - 1))).astype(np.float32)
    regular = sitk.GetImageFromArray(slices[below] * (1 - weight) + slices[below + 1] * weight,
                                     isVector=image.GetNumberOfComponentsPerPixel() > 1)
    regular.SetOrigin(image.GetOrigin())
    regular.SetDirection(image.GetDirection())
    regular.SetSpacing((*image.GetSpacing()[:2], spacing))
    return regular


def _header(file: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}


def _numbers(text: str, count: int) -> list[float]:
    values = [float(v) for v in text.split("\\")]
    if len(values) != count:
        raise ValueError(text)
    return values


def _names(paths: Sequence[str | Path]) -> str:
    names = [Path(p).name for p in paths[:_LISTED]]
    more = f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else ""
    return ", ".join(names) + more


def _listing(found: Sequence[Series]) -> str:
    return "; ".join(
        f"{s.uid} ({s.description or 'no description'}, {len(s.files)} slices)" for s in found)
