"""Shared fixtures: small crops of the real volumes the project ships, written to disk."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from napari_medgan.core.api import apply
from napari_medgan.core.config import Config
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.samples import sample_volume
from napari_medgan.core.data.volume import Volume


def _crop(name: str, start: tuple[int, int, int], size: int, label: str) -> Volume:
    volume = sample_volume(name)
    (i, j, k), s = start, size
    affine = volume.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ [i, j, k]  # the crop keeps its place in the world
    return Volume(volume.tensor[:, i : i + s, j : j + s, k : k + s].clone(), affine, label)


@pytest.fixture(scope="session")
def real_dir(tmp_path_factory):
    """Crops (40³) of the shipped real volumes, on two grids: ``*_a`` to train, ``*_b`` held out.

    t1 (MR), gm (grey-matter probability), labels (0 rest, 1 GM, 2 WM); ct_a (CT, HU).
    """
    folder = tmp_path_factory.mktemp("real")
    crops = {
        "t1_a": _crop("mni152_t1", (50, 70, 60), 40, "t1_a"),
        "t1_b": _crop("mni152_t1", (100, 70, 60), 40, "t1_b"),
        "ct_a": _crop("ct_head", (80, 80, 60), 40, "ct_a"),
    }
    for side, start in (("a", (50, 70, 60)), ("b", (100, 70, 60))):
        gm = _crop("mni152_gm", start, 40, f"gm_{side}")
        wm = _crop("mni152_wm", start, 40, f"wm_{side}")
        crops[f"gm_{side}"] = gm
        # tissue labels: 1 grey matter, 2 white matter, 0 the rest
        labels = torch.where(wm.tensor > 0.5, 2, torch.where(gm.tensor > 0.5, 1, 0))
        crops[f"labels_{side}"] = Volume(labels.to(torch.uint8), gm.affine, f"labels_{side}")
    for name, volume in crops.items():
        write_volume(volume, folder / f"{name}.nii.gz")
    return folder


@pytest.fixture
def scans(real_dir, tmp_path):
    """A folder of the user's scans: one real volume that no output may ever replace."""
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(real_dir / "t1_a.nii.gz", folder)
    return folder


@pytest.fixture
def tiny_config(real_dir):
    """A model small enough to train a few steps in about a second on 2 cores."""

    def make(*paths, **train) -> Config:
        config = Config()
        config.data.paths = [str(real_dir / p) for p in (paths or ("t1_a.nii.gz",))]
        config.model.patch_size = 16
        config.model.latent_dim = 8
        config.model.g_channels = 4
        config.model.d_channels = 4
        config.model.max_channels = 16
        config.train.steps = 4
        config.train.batch_size = 2
        config.train.device = "cpu"
        config.train.preview_every = 2
        config.train.checkpoint_every = 2
        for key, value in train.items():
            setattr(config.train, key, value)
        return config

    return make


@pytest.fixture(scope="session")
def conditional_config(real_dir):
    """A tiny U-Net / PatchGAN config for a conditional task on t1_a: trains in seconds."""

    def make(task: str, steps: int, *, batch: int = 4, **data) -> Config:
        """``data``: DataConfig fields; file names without a folder are crops in real_dir."""
        config = Config()
        config.task = task
        config.data.paths = [str(real_dir / "t1_a.nii.gz")]
        for key, value in data.items():
            if key in ("paths", "targets", "labels", "masks"):
                value = [str(real_dir / v) for v in value]  # an absolute path stays as it is
            setattr(config.data, key, value)
        config.model.patch_size = 16
        config.model.unet_channels = (8, 16, 32)
        config.model.patchgan_channels = 8
        config.train.steps, config.train.batch_size, config.train.device = steps, batch, "cpu"
        config.train.lr_g = config.train.lr_d = 1e-3
        config.train.checkpoint_every = config.train.preview_every = 1000
        return config

    return make


@pytest.fixture(scope="session")
def t1_to_gm_errors(real_dir):
    """Apply a T1 → grey-matter model to held-out t1_b: its MAE and the mean baseline's.

    The result must keep t1_b's shape and affine; the baseline predicts gm_a's mean.
    """

    def errors(checkpoint) -> tuple[float, float]:
        result = apply(checkpoint, real_dir / "t1_b.nii.gz")
        t1 = read_volume(real_dir / "t1_b.nii.gz")
        assert result.tensor.shape == t1.tensor.shape
        np.testing.assert_allclose(result.affine, t1.affine)
        truth = read_volume(real_dir / "gm_b.nii.gz").tensor
        baseline = read_volume(real_dir / "gm_a.nii.gz").tensor.mean()
        return float((result.tensor - truth).abs().mean()), float((truth - baseline).abs().mean())

    return errors


def _write_dicom_series(folder, array, spacing, origin, *, skip=(), series=1, description="",
                        direction=None):
    """As SimpleITK's "DICOM series from array" example: one file per slice, with tags.

    ``skip``: slice indices left out (missing slices); ``series``: a number that makes the
    series UID and file names differ, for several series in one folder.
    """
    image = sitk.GetImageFromArray(array)  # array (k, j, i)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    stamp = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    uid = f"1.2.826.0.1.3680043.2.1125.{stamp[0]}.{series}{stamp[1]}"
    direction = image.GetDirection()
    series_tags = [
        ("0008|0031", stamp[1]), ("0008|0021", stamp[0]), ("0008|0008", "DERIVED\\SECONDARY"),
        ("0020|000e", uid), ("0008|0060", "CT"), ("0018|0050", str(spacing[2])),
        ("0020|0037", "\\".join(str(d) for d in (*direction[0:7:3], *direction[1:8:3]))),
        ("0008|103e", description),
    ]
    folder.mkdir(exist_ok=True)
    for k in range(image.GetDepth()):
        if k in skip:
            continue
        slice_ = image[:, :, k]
        for tag, value in series_tags:
            slice_.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_.SetMetaData("0020|0032", "\\".join(map(str, position)))
        slice_.SetMetaData("0020|0013", str(k))
        slice_.SetMetaData("0028|0030", f"{spacing[1]}\\{spacing[0]}")
        writer.SetFileName(str(folder / f"s{series}_slice{k:03d}.dcm"))
        writer.Execute(slice_)
    return uid


@pytest.fixture
def write_dicom_series():
    """Writes a DICOM series slice by slice with SimpleITK: see :func:`_write_dicom_series`."""
    return _write_dicom_series
