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

import errno
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
import torch
import torchio as tio
from torchio.data.io import sitk_to_nib

from ..errors import DataError, MedGANError, MedGANWarning
from ..output import check_output, write_atomically
from . import series
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


def volume_name(path: str | Path | Volume) -> str:
    """The name a volume read from ``path`` gets: the file name without its format suffix.

    A DICOM series is named after its folder (also when picked as ``FOLDER::UID``); an
    in-memory volume keeps its own name.
    """
    if isinstance(path, Volume):
        return path.name
    path, uid = series.split_series_path(path)
    if uid is not None or path.is_dir():
        return path.name
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix in FORMATS else path.name


def is_dicom_series(folder: Path) -> bool:
    """True if ``folder`` holds DICOM files; a folder that also holds volume files is refused."""
    dicom = series.dicom_files(folder)
    if dicom:
        series.refuse_mixed_folder(folder, dicom, [
            child for child in sorted(folder.iterdir())
            if child.is_file() and not child.name.startswith(".") and suffix_of(child) in FORMATS
        ])
    return bool(dicom)


#: A volume given by path, or already in memory (a napari layer, a Slicer node).
VolumeSource = str | os.PathLike | Volume


def find_volume_files(paths: VolumeSource | Iterable[VolumeSource]) -> list[Path | Volume]:
    """Expand files and folders into the volumes they hold.

    In-memory volumes pass through as they are. A file must have a supported suffix. A
    folder holding one DICOM series is one volume (a folder holding several is refused,
    listing them: pick one as ``FOLDER::UID``); any other folder stands for its supported
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
        _, uid = series.split_series_path(path)
        if uid is not None:
            found.append(series.pick_series(path).path)
            continue
        if not path.exists():
            raise DataError(f"{path} does not exist; check the path.")
        if path.is_dir():
            if is_dicom_series(path):
                found.append(series.pick_series(path).folder)
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
            for child in inside:
                if child.is_dir():
                    series.pick_series(child)  # one series per sub-folder, or say which
            found.extend(inside)
        elif suffix_of(path) in FORMATS:
            found.append(path)
        else:
            raise unsupported_suffix(path)
    if not found:
        raise DataError("No input volumes were given.")
    return found


def read_volume(path: VolumeSource, *, irregular_series: str = "refuse") -> Volume:
    """Read one volume as float32 ``(C, D, H, W)`` with its RAS affine.

    ``path`` is a file with a supported suffix, a folder holding one DICOM series, or
    ``FOLDER::SERIES_UID`` for one series of a folder that holds several. A series with
    missing slices or uneven spacing is refused unless ``irregular_series="resample"``
    (see :func:`.series.read_series`). The volume's name is :func:`volume_name`. An
    in-memory volume comes back as float32, as if read from its file.
    """
    if isinstance(path, Volume):
        return Volume(path.tensor.to(torch.float32), path.affine, path.name)
    _, uid = series.split_series_path(path)
    path = Path(path)
    if uid is None and not path.exists():
        raise DataError(f"{path} does not exist; check the path.")
    if uid is not None or path.is_dir():
        if uid is None and not is_dicom_series(path):
            raise DataError(f"The folder {path} is not a DICOM series; pass {_SUPPORTED_TEXT}.")
        kind = "DICOM series"
    elif suffix_of(path) in FORMATS:
        kind = FORMATS[suffix_of(path)] + " file"
    else:
        raise unsupported_suffix(path)
    try:
        if kind == "DICOM series":
            image = series.read_series(series.pick_series(path), irregular_series)
            data, affine = sitk_to_nib(image)
            tensor = torch.from_numpy(np.ascontiguousarray(data))
        elif suffix_of(path) in _TIFF:
            tensor, affine = _read_tiff(path)
        elif FORMATS[suffix_of(path)] == "NIfTI":
            tensor, affine = _read_nifti(path)
        else:
            tensor, affine = _read_torchio(path)
    except MedGANError:
        raise
    except Exception as err:  # every reader fails differently (RuntimeError, OSError, EOFError...)
        raise DataError(
            f"Could not read {path}: it may be truncated or corrupt, or not a {kind} "
            f"as its name says."
        ) from err
    return Volume(tensor.to(torch.float32).contiguous(), affine, name=volume_name(path))


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

    The output place is checked first (:func:`~napari_medgan.core.output.check_output`).
    The file appears complete or not at all: it is written to a temporary name in the
    same folder, read back (shape, values and geometry; a short write fails to decode), and only
    then renamed over ``path``. An existing file is kept unless ``overwrite``, and after
    a failed write it is still the previous file.
    """
    path = check_output(path, kind="volume", overwrite=overwrite)

    def write_verified(temporary: Path) -> None:
        _write(volume, temporary, path)
        _verify(temporary, volume, path)

    return write_atomically(path, write_verified)


def _write(volume: Volume, temporary: Path, path: Path) -> None:
    tensor = volume.tensor.detach().cpu()
    suffix = suffix_of(path)
    if suffix in _TIFF:
        _write_tiff(tensor, volume.affine, temporary, path)
    elif FORMATS[suffix] == "NIfTI":
        _write_nifti(tensor, volume.affine, temporary)
    else:
        tio.ScalarImage(tensor=tensor, affine=volume.affine).save(temporary)


def _write_nifti(tensor: torch.Tensor, affine: np.ndarray, temporary: Path) -> None:
    """nibabel keeps the affine in the sform exactly, shear included (SimpleITK would
    orthogonalise it); channels go after the three spatial axes, as :func:`_read_nifti` reads.
    """
    array = tensor.numpy()
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:  # NIfTI has no half floats
        array = array.astype(np.float32)
    elif array.dtype == np.int64 and array.size and np.abs(array).max() < 2**31:
        array = array.astype(np.int32)  # many NIfTI readers refuse 64-bit integers
    array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    image = nib.Nifti1Image(np.ascontiguousarray(array), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    nib.save(image, temporary)


def _verify(temporary: Path, volume: Volume, path: Path) -> None:
    """Read the written file back: a short or failed write must not be renamed into place."""
    if temporary.stat().st_size == 0:
        raise OSError(errno.ENOSPC, "the file came out empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = read_volume(temporary)
    except DataError as err:
        raise OSError(errno.EIO, "the written file does not read back whole") from err
    if back.tensor.shape != volume.tensor.shape:
        raise OSError(errno.EIO, f"the written file reads back with shape "
                                 f"{tuple(back.tensor.shape)}, not {tuple(volume.tensor.shape)}")
    if not torch.allclose(back.tensor, volume.tensor.detach().cpu().to(back.tensor.dtype),
                          rtol=0, atol=0, equal_nan=True):  # a writer that cast and wrapped
        raise OSError(errno.EIO, f"a {suffix_of(path)} file can't hold this volume's values "
                                 "exactly; write .nii.gz")
    if suffix_of(path) in _TIFF:  # a TIFF keeps only the voxel size
        same = np.allclose(back.spacing, volume.spacing, rtol=1e-4)
    else:
        same = np.allclose(back.affine, volume.affine, atol=1e-3)
    if not same:
        raise OSError(errno.EIO, f"a {suffix_of(path)} file can't hold this volume's "
                                 "orientation exactly; write .nii.gz")


def unsupported_suffix(path: Path, *, writing: bool = False) -> DataError:
    """The error for a file type we don't read (or, ``writing``, don't write)."""
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
    if image.get_data_dtype().names:  # RGB24 / RGBA32: a structured colour type
        raise DataError(
            f"{path} is an RGB (colour) NIfTI; one grey channel is needed: convert it to "
            "greyscale first (e.g. keep one of its colour channels)."
        )
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


def _tiff_array(array: np.ndarray, path: Path) -> np.ndarray:
    """ImageJ stores float32, uint8 and uint16: label maps keep an integer type, and
    other whole numbers go to float32 only where it holds them exactly (below 2**24)."""
    if np.issubdtype(array.dtype, np.integer) and array.size:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high < 2**16:
            return array.astype(np.uint8 if high < 2**8 else np.uint16)
        if max(-low, high) >= 2**24:
            raise DataError(
                f"{path} can't hold the value {high if high >= -low else low} exactly (a TIFF "
                "keeps 8/16-bit whole numbers or 32-bit floats); write .nii.gz or .nrrd."
            )
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
        _tiff_array(tensor.permute(3, 0, 2, 1).numpy(), path),
        imagej=True,
        resolution=(1.0 / sx, 1.0 / sy),
        metadata={"axes": "ZCYX", "spacing": sz, "unit": "mm"},
    )
