"""Reading, checking and writing volumes: real files on disk, geometry kept exactly."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import torch

from napari_medgan.core.data.io import (
    SUPPORTED_SUFFIXES,
    check_volume,
    find_volume_files,
    read_volume,
    write_volume,
)
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.errors import DataError, MedGANWarning, OutputExistsError

ATOL = 1e-5


def oblique_affine(spacing=(0.7, 1.3, 2.9), origin=(-91.25, 12.5, 40.75)) -> np.ndarray:
    """Rotation about two axes (not axis-aligned), anisotropic voxels, an off-centre origin."""
    a, b = np.deg2rad(25), np.deg2rad(-40)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


def ramp(shape=(10, 12, 8)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def save_nifti(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_supported_suffixes():
    assert set(SUPPORTED_SUFFIXES) == {".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd",
                                       ".tif", ".tiff"}


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_read_nifti_keeps_voxels_affine_and_name(tmp_path, suffix):
    affine = oblique_affine()
    path = save_nifti(tmp_path / f"brain{suffix}", ramp().astype(np.int16), affine)
    volume = read_volume(path)
    assert volume.name == "brain"
    assert volume.tensor.dtype == torch.float32
    assert volume.tensor.shape == (1, 10, 12, 8)
    assert torch.equal(volume.tensor[0], torch.from_numpy(ramp()))
    np.testing.assert_allclose(volume.affine, nib.load(path).affine, atol=ATOL)
    np.testing.assert_allclose(volume.spacing, (0.7, 1.3, 2.9), atol=ATOL)


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_read_itk_formats_convert_lps_to_ras(tmp_path, suffix):
    """NRRD / MetaImage store LPS: the RAS affine flips the first two rows."""
    image = sitk.GetImageFromArray(ramp().transpose())  # sitk arrays are (k, j, i)
    image.SetSpacing((0.7, 1.3, 2.9))
    image.SetOrigin((10.0, -20.0, 30.0))
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path))
    volume = read_volume(path)
    assert volume.name == "scan"
    assert torch.equal(volume.tensor[0], torch.from_numpy(ramp()))
    expected = np.diag([-0.7, -1.3, 2.9, 1.0])
    expected[:3, 3] = (-10.0, 20.0, 30.0)
    np.testing.assert_allclose(volume.affine, expected, atol=ATOL)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("kind", ["oblique", "lps"])
def test_geometry_round_trip(tmp_path, suffix, kind):
    affine = oblique_affine() if kind == "oblique" else np.diag([-0.8, -0.8, 2.5, 1.0])
    if kind == "lps":
        affine[:3, 3] = (100.0, 120.0, -30.0)
    path = save_nifti(tmp_path / "in.nii.gz", ramp(), affine)
    volume = read_volume(path)
    back = read_volume(write_volume(volume, tmp_path / f"out{suffix}"))
    np.testing.assert_allclose(back.affine, affine, atol=ATOL)
    assert torch.equal(back.tensor, volume.tensor)


def test_nifti_to_nrrd_to_nifti_keeps_geometry(tmp_path):
    affine = oblique_affine(spacing=(0.5, 0.5, 3.0))
    first = read_volume(save_nifti(tmp_path / "a.nii.gz", ramp(), affine))
    nrrd = read_volume(write_volume(first, tmp_path / "b.nrrd"))
    again = read_volume(write_volume(nrrd, tmp_path / "c.nii.gz"))
    np.testing.assert_allclose(again.affine, affine, atol=ATOL)
    np.testing.assert_allclose(again.spacing, (0.5, 0.5, 3.0), atol=ATOL)
    assert torch.equal(again.tensor, first.tensor)


def test_tiff_imagej_spacing_in_microns(tmp_path):
    path = tmp_path / "cells.tif"
    stack = ramp((8, 12, 10))  # (Z, Y, X)
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "micron", "axes": "ZYX"})
    volume = read_volume(path)
    assert volume.name == "cells"
    assert volume.tensor.shape == (1, 10, 12, 8)  # (1, X, Y, Z)
    assert torch.equal(volume.tensor[0], torch.from_numpy(stack).permute(2, 1, 0))
    np.testing.assert_allclose(volume.affine, np.diag([0.25e-3, 0.5e-3, 2e-3, 1]), rtol=1e-9)


def test_tiff_ome_spacing(tmp_path):
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, ramp((8, 12, 10)), metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 2.0,
        "PhysicalSizeXUnit": "mm", "PhysicalSizeYUnit": "mm", "PhysicalSizeZUnit": "\u00b5m"})
    volume = read_volume(path)
    assert volume.tensor.shape == (1, 10, 12, 8)
    np.testing.assert_allclose(volume.spacing, (0.5, 0.25, 2e-3), rtol=1e-9)


def test_tiff_without_metadata_assumes_1mm_and_warns(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, ramp((8, 12, 10)))
    with pytest.warns(MedGANWarning, match="plain.tif.*1 mm"):
        volume = read_volume(path)
    assert volume.tensor.shape == (1, 10, 12, 8)
    np.testing.assert_array_equal(volume.affine, np.eye(4))


def test_tiff_spacing_round_trip(tmp_path):
    volume = Volume(torch.from_numpy(ramp())[None], np.diag([0.123456789, 1.3, 2.9, 1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a positive diagonal affine loses nothing
        back = read_volume(write_volume(volume, tmp_path / "out.tiff"))
    np.testing.assert_allclose(back.affine, volume.affine, rtol=1e-9)
    assert torch.equal(back.tensor, volume.tensor)


def test_tiff_write_warns_that_orientation_is_lost(tmp_path):
    volume = Volume(torch.from_numpy(ramp())[None], oblique_affine())
    with pytest.warns(MedGANWarning, match="orientation"):
        back = read_volume(write_volume(volume, tmp_path / "out.tif"))
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-9)


def test_read_dicom_series_folder(tmp_path, write_dicom_series):
    array = (ramp((6, 12, 10)) % 500).astype(np.int16)  # (k, j, i)
    folder = tmp_path / "series"
    write_dicom_series(folder, array, spacing=(0.6, 0.7, 2.5), origin=(5.0, -3.0, 12.0))
    assert find_volume_files([tmp_path]) == [folder]
    volume = read_volume(folder)
    assert volume.name == "series"
    assert volume.tensor.shape == (1, 10, 12, 6)
    np.testing.assert_allclose(volume.spacing, (0.6, 0.7, 2.5), atol=1e-4)
    np.testing.assert_allclose(volume.affine[:3, 3], (-5.0, 3.0, 12.0), atol=1e-4)
    assert torch.equal(volume.tensor[0], torch.from_numpy(array.transpose().astype(np.float32)))


def lps_to_ras(direction, spacing, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction).reshape(3, 3) * np.asarray(spacing)
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def test_oblique_dicom_series_keeps_its_exact_geometry(tmp_path, write_dicom_series):
    array = (ramp((7, 12, 10)) % 300).astype(np.int16)
    rotation = oblique_affine(spacing=(1, 1, 1))[:3, :3]
    folder = tmp_path / "oblique"
    write_dicom_series(folder, array, spacing=(0.6, 0.7, 2.5), origin=(5.0, -3.0, 12.0),
                       direction=rotation.flatten().tolist())
    volume = read_volume(folder)
    expected = lps_to_ras(rotation, (0.6, 0.7, 2.5), (5.0, -3.0, 12.0))
    np.testing.assert_allclose(volume.affine, expected, atol=1e-4)
    assert torch.equal(volume.tensor[0], torch.from_numpy(array.transpose().astype(np.float32)))


def test_dicom_series_with_missing_slices_is_refused_naming_the_gap(tmp_path,
                                                                    write_dicom_series):
    array = (ramp((8, 12, 10)) % 500).astype(np.int16)
    folder = tmp_path / "gappy"
    write_dicom_series(folder, array, spacing=(0.6, 0.7, 2.5), origin=(0.0, 0.0, 0.0),
                       skip=(4, 5))
    pattern = (r"gappy \(UID [0-9.]+\) has missing slices.*2\.5 mm apart.*"
               r"s1_slice003\.dcm \(at 7\.5 mm\) and s1_slice006\.dcm \(at 15 mm\)"
               r" are 7\.5 mm apart, about 2 missing.*"
               r"irregular_series: resample")
    with pytest.raises(DataError, match=pattern):
        read_volume(folder)


def test_irregular_dicom_series_is_resampled_only_when_asked(tmp_path, write_dicom_series):
    k, j, i = np.meshgrid(np.arange(8), np.arange(12), np.arange(10), indexing="ij")
    array = (100 * k + j + i).astype(np.int16)  # linear along the slices: interpolation is exact
    folder = tmp_path / "gappy"
    write_dicom_series(folder, array, spacing=(0.6, 0.7, 2.5), origin=(5.0, -3.0, 12.0),
                       skip=(3,))
    with pytest.warns(MedGANWarning, match=r"gappy.*irregular.*resampled onto a regular 2\.5 mm"):
        volume = read_volume(folder, irregular_series="resample")
    assert volume.tensor.shape == (1, 10, 12, 8)
    np.testing.assert_allclose(volume.spacing, (0.6, 0.7, 2.5), atol=1e-4)
    np.testing.assert_allclose(volume.affine[:3, 3], (-5.0, 3.0, 12.0), atol=1e-4)
    np.testing.assert_allclose(volume.tensor[0].numpy(), array.transpose(), atol=1e-3)


def test_folder_with_two_series_lists_them_and_reads_the_one_picked(tmp_path,
                                                                   write_dicom_series):
    array = (ramp((6, 12, 10)) % 500).astype(np.int16)
    folder = tmp_path / "study"
    first = write_dicom_series(folder, array, spacing=(0.6, 0.7, 2.5), origin=(0.0, 0.0, 0.0),
                               description="T1 axial")
    second = write_dicom_series(folder, array[:5] * 2, spacing=(0.6, 0.7, 3.0),
                                origin=(0.0, 0.0, 0.0), series=2, description="T2 axial")
    listing = (rf"study holds 2 DICOM series: .*{first} \(T1 axial, 6 slices\).*"
               rf"{second} \(T2 axial, 5 slices\).*FOLDER::SERIES_UID")
    for read in (read_volume, find_volume_files):
        with pytest.raises(DataError, match=listing):
            read(folder)
    with pytest.raises(DataError, match=listing):
        find_volume_files(tmp_path)  # a sub-folder with two series is refused as well
    picked = f"{folder}::{second}"
    assert find_volume_files([picked]) == [Path(picked)]
    volume = read_volume(picked)
    assert volume.name == "study" and volume.tensor.shape == (1, 10, 12, 5)
    np.testing.assert_allclose(volume.spacing, (0.6, 0.7, 3.0), atol=1e-4)
    assert torch.equal(volume.tensor[0], torch.from_numpy(2 * array[:5].transpose()).float())
    with pytest.raises(DataError, match=rf"study holds no series 1\.2\.3; it holds: {first}"):
        read_volume(f"{folder}::1.2.3")


def test_a_stray_dicom_file_among_volumes_is_refused(tmp_path, write_dicom_series):
    for name in ("a", "b"):
        save_nifti(tmp_path / f"{name}.nii.gz", ramp(), np.eye(4))
    write_dicom_series(tmp_path / "tmp", (ramp((2, 12, 10)) % 500).astype(np.int16),
                       spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    (tmp_path / "tmp" / "s1_slice000.dcm").rename(tmp_path / "stray.dcm")
    with pytest.raises(DataError, match=r"mixes 2 volume file\(s\) \(a\.nii\.gz, b\.nii\.gz\) "
                                        r"with 1 DICOM file\(s\) \(stray\.dcm\)"):
        find_volume_files(tmp_path)
    with pytest.raises(DataError, match="mixes"):
        read_volume(tmp_path)


def test_rgb_nifti_is_called_colour_not_corrupt(tmp_path):
    rgb = np.zeros((6, 7, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "photo.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"photo\.nii\.gz is an RGB \(colour\) NIfTI; one grey"):
        read_volume(path)


def test_find_volume_files_expands_folders_sorted(tmp_path):
    for name in ("b.nrrd", "a.nii.gz", "c.tif", "notes.txt", "a.raw"):
        (tmp_path / name).write_bytes(b"x")
    single = tmp_path / "one.mha"
    single.write_bytes(b"x")
    found = find_volume_files([tmp_path, single])
    assert [p.name for p in found] == ["a.nii.gz", "b.nrrd", "c.tif", "one.mha", "one.mha"]


def test_find_volume_files_refuses_bad_paths(tmp_path):
    with pytest.raises(DataError, match="missing.nii.gz.*does not exist"):
        find_volume_files([tmp_path / "missing.nii.gz"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"empty holds no volumes.*\.nii\.gz.*\.nrrd.*DICOM"):
        find_volume_files([empty])
    (tmp_path / "photo.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"photo.png.*unsupported.*\.png.*\.nii\.gz"):
        find_volume_files(tmp_path / "photo.png")


def test_read_volume_refuses_bad_files(tmp_path):
    with pytest.raises(DataError, match="nothere.nii.*does not exist"):
        read_volume(tmp_path / "nothere.nii")
    (tmp_path / "image.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"image.png.*unsupported.*\.nrrd"):
        read_volume(tmp_path / "image.png")

    for suffix in (".nii.gz", ".nii"):  # SimpleITK would zero-fill these without a word
        good = save_nifti(tmp_path / f"good{suffix}", ramp((40, 40, 40)), np.eye(4))
        truncated = tmp_path / f"cut{suffix}"
        truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(DataError, match=f"cut{suffix}.*truncated or corrupt.*NIfTI"):
            read_volume(truncated)

    garbage = tmp_path / "noise.nrrd"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="noise.nrrd.*truncated or corrupt.*NRRD"):
        read_volume(garbage)

    wrong_header = tmp_path / "fake.nii.gz"
    wrong_header.write_bytes(gzip.compress(b"this is not a NIfTI header" * 40))
    with pytest.raises(DataError, match="fake.nii.gz.*corrupt"):
        read_volume(wrong_header)


def volume_of(array, name="v") -> Volume:
    return Volume(torch.as_tensor(array, dtype=torch.float32), np.eye(4), name)


def test_check_volume_accepts_a_3d_volume():
    check_volume(volume_of(ramp()[None]), "ok.nii.gz")


def test_check_volume_refuses_2d_images(tmp_path):
    path = save_nifti(tmp_path / "slice.nii.gz", ramp((32, 32, 1)), np.eye(4))
    with pytest.raises(DataError, match="slice.nii.gz is a 2D image"):
        check_volume(read_volume(path), str(path))
    png_like = tmp_path / "photo.tif"
    tifffile.imwrite(png_like, ramp((32, 32)))
    with pytest.warns(MedGANWarning), pytest.raises(DataError, match="photo.tif is a 2D image"):
        check_volume(read_volume(png_like), str(png_like))


def test_check_volume_refuses_4d_time_series(tmp_path):
    path = save_nifti(tmp_path / "fmri.nii.gz", ramp((8, 9, 10, 5)), np.eye(4))
    volume = read_volume(path)
    assert volume.tensor.shape == (5, 8, 9, 10)
    with pytest.raises(DataError, match="fmri.nii.gz has 5 channels or time points.*one 3D"):
        check_volume(volume, str(path))


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "infinite")])
def test_check_volume_refuses_non_finite_voxels(tmp_path, value, word):
    array = ramp()
    array[0, 0, :3] = value
    path = save_nifti(tmp_path / "bad.nii.gz", array, np.eye(4))
    with pytest.raises(DataError, match=f"bad.nii.gz has 3 {word} voxel"):
        check_volume(read_volume(path), str(path))


def test_check_volume_refuses_constant_volume():
    with pytest.raises(DataError, match="flat.nrrd is constant.*every voxel is 7"):
        check_volume(volume_of(np.full((1, 8, 8, 8), 7.0)), "flat.nrrd")


def test_write_refuses_existing_file_and_leaves_it_alone(tmp_path):
    target = tmp_path / "keep.nii.gz"
    target.write_bytes(b"precious")
    volume = volume_of(ramp()[None])
    with pytest.raises(OutputExistsError, match="keep.nii.gz already exists"):
        write_volume(volume, target)
    assert target.read_bytes() == b"precious"
    write_volume(volume, target, overwrite=True)
    assert torch.equal(read_volume(target).tensor, volume.tensor)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]  # no temp files left


def test_write_creates_folders_and_refuses_unknown_suffix(tmp_path):
    volume = volume_of(ramp()[None])
    path = write_volume(volume, tmp_path / "a" / "b" / "out.mha")
    assert path.is_file()
    with pytest.raises(DataError, match=r"out.png.*unsupported.*\.nii\.gz"):
        write_volume(volume, tmp_path / "out.png")


def test_tiff_channels_become_channels_and_are_refused(tmp_path):
    path = tmp_path / "two_colours.tif"
    tifffile.imwrite(path, ramp((8, 2, 12, 10)), imagej=True,
                     metadata={"axes": "ZCYX", "unit": "micron"})
    volume = read_volume(path)
    assert volume.tensor.shape == (2, 10, 12, 8)
    with pytest.raises(DataError, match="two_colours.tif has 2 channels"):
        check_volume(volume, str(path))


def test_tiff_keeps_label_values_above_16_bits_or_refuses_them(tmp_path):
    """ImageJ TIFF holds uint8/uint16/float32: a label 70000 is kept exactly (float32),
    never wrapped to 4464; a value float32 can't hold is refused, the old file kept."""
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.int32)
    labels[0, 2:4] = 1
    labels[0, 5:] = 70_000
    path = write_volume(Volume(labels, np.eye(4)), tmp_path / "labels.tif")
    assert read_volume(path).tensor.unique().tolist() == [0, 1, 70_000]
    labels[0, 0] = 2**24 + 1
    with pytest.raises(DataError, match="can't hold the value 16777217 exactly"):
        write_volume(Volume(labels, np.eye(4)), path, overwrite=True)
    assert read_volume(path).tensor.unique().tolist() == [0, 1, 70_000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]
