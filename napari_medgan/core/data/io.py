"""Read and write volumes with their geometry: NIfTI, NRRD, MetaImage, TIFF stacks, DICOM series.

NRRD, MetaImage and DICOM go through torchio (SimpleITK underneath), which turns the
file's LPS geometry into the RAS affine of :class:`Volume`. NIfTI is read with nibabel:
SimpleITK's NIfTI reader silently fills a truncated file with zeros and turns NaN voxels
into 0, which would hide exactly the damage :func:`check_volume` looks for. TIFF goes
through tifffile, because SimpleITK drops the voxel size that ImageJ and OME keep in
their own metadata.

>>> volume = read_volume("brain.nii.gz")
>>> check_volume(volume, "brain.nii.gz")
>>> write_volume(volume, "brain.nrrd")
"""

from __future__ import annotations

import os
import uuid
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
import torch
import torchio as tio

from ..errors import DataError, MedGANWarning, OutputExistsError
from .volume import Volume

#: File suffix -> format name, for the formats :func:`read_volume` understands.
FORMATS = {
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
SUPPORTED_SUFFIXES = tuple(FORMATS)
#: Formats :func:`write_volume` produces: single files only (a .mhd / .nhdr header points
#: at a separate data file by name, which an atomic rename would break).
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")
_SUPPORTED_TEXT = ", ".join(SUPPORTED_SUFFIXES) + " files or a DICOM series folder"

#: Length units found in ImageJ and OME metadata, in millimetres.
_UNIT_MM = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "cm": 10.0, "m": 1000.0,
    "micron": 1e-3, "microns": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "\u03bcm": 1e-3,
    "\\u00b5m": 1e-3, "nm": 1e-6, "inch": 25.4,
}


def suffix_of(path: str | Path) -> str:
    """The lower-case format suffix of ``path``, counting ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _stem(path: Path) -> str:
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def is_dicom_series(folder: Path) -> bool:
    """True if ``folder`` holds DICOM files: ``*.dcm`` or files with the ``DICM`` preamble."""
    for child in folder.iterdir():
        if child.name.startswith(".") or not child.is_file():
            continue
        if child.suffix.lower() == ".dcm":
            return True
        with open(child, "rb") as handle:
            handle.seek(128)
            if handle.read(4) == b"DICM":
                return True
    return False


#: A volume given by path, or already in memory (a napari layer, a Slicer node).
VolumeSource = str | os.PathLike | Volume


def find_volume_files(paths: VolumeSource | Iterable[VolumeSource]) -> list[Path | Volume]:
    """Expand files and folders into the volumes they hold.

    In-memory volumes pass through as they are. A file must have a supported suffix. A
    folder holding a DICOM series is one volume; any other folder stands for its supported
    files and DICOM series sub-folders, sorted (hidden files are skipped).
    """
    if isinstance(paths, (str, os.PathLike, Volume)):
        paths = [paths]
    found: list[Path | Volume] = []
    for given in paths:
        if isinstance(given, Volume):
            found.append(given)
            continue
        path = Path(given)
        if not path.exists():
            raise DataError(f"{path} does not exist; check the path.")
        if path.is_dir():
            if is_dicom_series(path):
                found.append(path)
                continue
            inside = [
                child for child in sorted(path.iterdir())
                if not child.name.startswith(".")
                and ((child.is_file() and suffix_of(child) in FORMATS)
                     or (child.is_dir() and is_dicom_series(child)))
            ]
            if not inside:
                raise DataError(
                    f"The folder {path} holds no volumes: looked for {_SUPPORTED_TEXT}."
                )
            found.extend(inside)
        elif suffix_of(path) in FORMATS:
            found.append(path)
        else:
            raise _unsupported(path)
    if not found:
        raise DataError("No input volumes were given.")
    return found


def read_volume(path: VolumeSource) -> Volume:
    """Read one volume as float32 ``(C, D, H, W)`` with its RAS affine.

    ``path`` is a file with a supported suffix or a folder holding a DICOM series. The
    volume's name is the file (or folder) name without its extension. An in-memory
    volume comes back as float32, as if read from its file.
    """
    if isinstance(path, Volume):
        return Volume(path.tensor.to(torch.float32), path.affine, path.name)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path.")
    if path.is_dir():
        if not is_dicom_series(path):
            raise DataError(f"The folder {path} is not a DICOM series; pass {_SUPPORTED_TEXT}.")
        kind = "DICOM series"
    elif suffix_of(path) in FORMATS:
        kind = FORMATS[suffix_of(path)] + " file"
    else:
        raise _unsupported(path)
    try:
        if path.is_file() and suffix_of(path) in _TIFF:
            tensor, affine = _read_tiff(path)
        elif path.is_file() and FORMATS[suffix_of(path)] == "NIfTI":
            tensor, affine = _read_nifti(path)
        else:
            tensor, affine = _read_torchio(path)
    except Exception as err:  # every reader fails differently (RuntimeError, OSError, EOFError...)
        raise DataError(
            f"Could not read {path}: it may be truncated or corrupt, or not a {kind} "
            f"as its name says."
        ) from err
    name = path.name if path.is_dir() else _stem(path)
    return Volume(tensor.to(torch.float32).contiguous(), affine, name=name)


def check_volume(volume: Volume, source: str) -> None:
    """Refuse a volume a 3D GAN can't learn from; ``source`` names it in the message."""
    shape = tuple(volume.tensor.shape)
    if min(volume.spatial_shape) == 1:
        raise DataError(
            f"{source} is a 2D image (shape {shape[1:]}); a 3D volume is needed. Use a 3D file "
            f"(NIfTI, NRRD, MetaImage, a TIFF stack) or a DICOM series folder."
        )
    if shape[0] > 1:
        raise DataError(
            f"{source} has {shape[0]} channels or time points; one 3D channel is needed. "
            f"Extract one first (e.g. with nibabel: nib.load(path).slicer[..., 0])."
        )
    tensor = volume.tensor
    for bad, test in (("NaN", torch.isnan), ("infinite", torch.isinf)):
        count = int(test(tensor).sum())
        if count:
            raise DataError(
                f"{source} has {count} {bad} voxel(s); replace them (e.g. with 0) and try again."
            )
    low, high = tensor.aminmax()
    if low == high:
        raise DataError(
            f"{source} is constant (every voxel is {float(low):g}): there is nothing to learn "
            f"from it."
        )


def write_volume(volume: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``volume`` with its geometry; the suffix picks the format.

    The file appears complete or not at all (written to a temporary name in the same
    folder, then renamed), and an existing file is kept unless ``overwrite``.
    """
    path = Path(path)
    suffix = suffix_of(path)
    if suffix not in WRITE_SUFFIXES:
        raise _unsupported(path, writing=True)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; choose another name or allow overwriting."
        )
    # The temporary name keeps the real suffix: the writers pick the format from it.
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensor = volume.tensor.detach().cpu()
        if suffix in _TIFF:
            _write_tiff(tensor, volume.affine, temporary, path)
        else:
            tio.ScalarImage(tensor=tensor, affine=volume.affine).save(temporary)
        os.replace(temporary, path)
    except Exception as err:
        raise DataError(f"Could not write {path}: {err}") from err
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _unsupported(path: Path, *, writing: bool = False) -> DataError:
    supported = ", ".join(WRITE_SUFFIXES) + "." if writing else _SUPPORTED_TEXT + "."
    return DataError(
        f"{path} has an unsupported file type {suffix_of(path) or '(no extension)'!r}; "
        f"supported: {supported}"
    )


def _read_torchio(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    image = tio.ScalarImage(path)
    with warnings.catch_warnings():  # torchio warns before its NiBabel fallback; we raise instead
        warnings.simplefilter("ignore")
        return image.data, image.affine


def _read_nifti(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """NIfTI axes ``(i, j, k, ...)``: anything after the three spatial axes becomes channels."""
    image = nib.load(path)
    data = np.asarray(image.get_fdata(dtype=np.float32))
    spatial = (*data.shape, 1, 1)[:3]  # a 2D NIfTI gets a k axis of size 1
    channels_first = np.moveaxis(data.reshape(*spatial, -1), -1, 0)
    return torch.from_numpy(np.ascontiguousarray(channels_first)), image.affine


def _read_tiff(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """A TIFF stack ``(Z, Y, X)`` becomes ``(C, X, Y, Z)`` with affine ``diag(sx, sy, sz, 1)``.

    Axes other than Z, Y, X (channels, time, RGB samples) become channels. The voxel size
    comes from, in this order:

    - OME-XML ``PhysicalSizeX/Y/Z`` with their ``PhysicalSize*Unit`` (micrometres when no
      unit is given, as the OME schema says);
    - ImageJ metadata: X and Y from the XResolution / YResolution tags (pixels per unit),
      Z from ``spacing``, all in the ImageJ ``unit`` (micron, mm, ...). Without a known
      unit the numbers are not lengths, and are ignored.

    With neither, every axis is assumed to be 1 mm and a :class:`MedGANWarning` says so.
    """
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data, axes = series.asarray(), series.axes
        spacing = _ome_spacing(tif.ome_metadata) if tif.is_ome else None
        if spacing is None and tif.is_imagej:
            spacing = _imagej_spacing(tif.imagej_metadata or {}, tif.pages[0].resolution)
    if "Z" not in axes:  # a plain multi-page TIFF calls its page axis Q or I
        axes = next((axes.replace(a, "Z", 1) for a in "QI" if a in axes), axes)
    if "Z" not in axes:
        data, axes = data[np.newaxis], "Z" + axes
    if not {"X", "Y"} <= set(axes):
        raise ValueError(f"TIFF series with axes {axes!r} has no X and Y")
    others = [i for i, a in enumerate(axes) if a not in "ZYX"]
    data = data.transpose(*others, axes.index("X"), axes.index("Y"), axes.index("Z"))
    data = data.reshape(-1, *data.shape[-3:])
    if spacing is None:
        warnings.warn(
            f"{path.name} has no voxel size in ImageJ or OME metadata; assuming 1 mm voxels.",
            MedGANWarning,
            stacklevel=3,
        )
        spacing = (1.0, 1.0, 1.0)
    return torch.from_numpy(data.astype(np.float32)), np.diag([*spacing, 1.0])


def _ome_spacing(ome_xml: str | None) -> tuple[float, float, float] | None:
    pixels = next((e for e in ET.fromstring(ome_xml or "<x/>").iter()
                   if e.tag.endswith("Pixels")), None)
    if pixels is None or not any(f"PhysicalSize{a}" in pixels.attrib for a in "XYZ"):
        return None
    sizes = []
    for axis in "XYZ":  # an axis without a size (a single plane, often Z) counts as 1 mm
        size = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "\u00b5m")
        if unit not in _UNIT_MM:
            return None
        sizes.append(float(size) * _UNIT_MM[unit] if size else 1.0)
    return sizes[0], sizes[1], sizes[2]


def _imagej_spacing(
    metadata: dict, resolution: tuple[float, float]
) -> tuple[float, float, float] | None:
    scale = _UNIT_MM.get(str(metadata.get("unit", "")).strip().lower())
    if scale is None:
        return None
    x_per_unit, y_per_unit = resolution
    z = float(metadata.get("spacing", 1.0))
    return scale / x_per_unit, scale / y_per_unit, scale * z


def _tiff_array(array: np.ndarray) -> np.ndarray:
    """ImageJ stores float32, uint8 and uint16: label maps keep an integer type."""
    if np.issubdtype(array.dtype, np.integer) and array.min() >= 0:
        return array.astype(np.uint8 if array.max() < 256 else np.uint16)
    return array.astype(np.float32)


def _write_tiff(tensor: torch.Tensor, affine: np.ndarray, temporary: Path, path: Path) -> None:
    """An ImageJ hyperstack ``(Z, C, Y, X)`` with the voxel size in mm; nothing else fits."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.allclose(affine, np.diag([*spacing, 1.0]), atol=1e-6):
        warnings.warn(
            f"{path.name}: a TIFF keeps only the voxel size; the volume's orientation and "
            f"origin are not saved. Use .nii.gz or .nrrd to keep them.",
            MedGANWarning,
            stacklevel=3,
        )
    sx, sy, sz = (float(s) for s in spacing)
    tifffile.imwrite(
        temporary,
        _tiff_array(tensor.permute(3, 0, 2, 1).numpy()),
        imagej=True,
        resolution=(1.0 / sx, 1.0 / sy),
        metadata={"axes": "ZCYX", "spacing": sz, "unit": "mm"},
    )
