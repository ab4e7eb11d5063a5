"""Loading a training set: checks, spacing alignment, patch fit and masks, on real files."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_medgan.core.data.dataset import load_training_volumes
from napari_medgan.core.errors import DataError, MedGANWarning


def save(path, shape=(20, 20, 20), spacing=(1.0, 1.0, 1.0), array=None):
    if array is None:
        array = np.random.default_rng(len(str(path))).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))
    return path


def test_loads_a_folder_and_summarises_it(tmp_path):
    save(tmp_path / "a.nii.gz")
    save(tmp_path / "b.nii.gz", shape=(24, 20, 18))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_training_volumes([tmp_path], patch_size=16)
    assert [v.name for v in data.volumes] == ["a", "b"]
    assert data.masks is None
    assert data.summary["shapes"] == [[20, 20, 20], [24, 20, 18]]
    assert data.summary["resampled"] == []
    assert data.summary["files"][1].endswith("b.nii.gz")
    json.dumps(data.summary)


def test_different_spacing_is_resampled_with_a_warning(tmp_path):
    first = save(tmp_path / "fine.nii.gz", shape=(20, 20, 20))
    coarse = save(tmp_path / "coarse.nii.gz", shape=(10, 20, 10), spacing=(2.0, 1.0, 2.0))
    expected = r"coarse.nii.gz.*2 x 1 x 2 mm.*1 x 1 x 1 mm.*resampled"
    with pytest.warns(MedGANWarning, match=expected):
        data = load_training_volumes([first, coarse], patch_size=8)
    assert data.volumes[1].spacing == pytest.approx((1.0, 1.0, 1.0))
    assert data.volumes[1].spatial_shape == (20, 20, 20)
    assert data.summary["resampled"] == [str(coarse)]
    json.dumps(data.summary)


def test_different_spacing_refused_names_both_files(tmp_path):
    first = save(tmp_path / "fine.nii.gz")
    coarse = save(tmp_path / "coarse.nii.gz", spacing=(1.0, 1.0, 3.0))
    with pytest.raises(DataError, match=r"coarse.nii.gz.*1 x 1 x 3 mm.*fine.nii.gz.*1 x 1 x 1 mm"):
        load_training_volumes([first, coarse], patch_size=8, spacing_mismatch="refuse")


def test_patch_larger_than_a_volume_suggests_a_size(tmp_path):
    save(tmp_path / "big.nii.gz", shape=(64, 64, 64))
    small = save(tmp_path / "small.nii.gz", shape=(40, 30, 50))
    expected = r"patch size 32 .*small.nii.gz.*\(40, 30, 50\).*16 or less"
    with pytest.raises(DataError, match=expected):
        load_training_volumes([tmp_path], patch_size=32)
    assert load_training_volumes([small], patch_size=16).volumes[0].spatial_shape == (40, 30, 50)


def test_volume_too_small_for_any_patch(tmp_path):
    tiny = save(tmp_path / "tiny.nii.gz", shape=(6, 20, 20))
    with pytest.raises(DataError, match="tiny.nii.gz.*too small"):
        load_training_volumes([tiny], patch_size=8)


def test_bad_volume_is_refused_by_name(tmp_path):
    array = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    array[3, 3, 3] = np.nan
    save(tmp_path / "a.nii.gz")
    save(tmp_path / "holes.nii.gz", array=array)
    with pytest.raises(DataError, match="holes.nii.gz has 1 NaN"):
        load_training_volumes([tmp_path], patch_size=8)


def test_masks_are_bool_and_follow_resampling(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    save(images / "a.nii.gz")
    save(images / "b.nii.gz", shape=(10, 10, 10), spacing=(2.0, 2.0, 2.0))
    label = np.zeros((20, 20, 20), np.float32)
    label[5:10, 5:10, 5:10] = 1
    save(masks / "a.nii.gz", array=label)
    save(masks / "b.nii.gz", array=label[::2, ::2, ::2].copy(), spacing=(2.0, 2.0, 2.0))
    with pytest.warns(MedGANWarning, match="resampled"):
        data = load_training_volumes([images], masks=[masks], patch_size=8)
    assert [m.dtype for m in data.masks] == [torch.bool, torch.bool]
    assert data.masks[0].shape == (1, 20, 20, 20)
    assert data.masks[1].shape == data.volumes[1].tensor.shape == (1, 20, 20, 20)
    assert int(data.masks[0].sum()) == 125
    assert set(torch.unique(data.masks[1].float()).tolist()) == {0.0, 1.0}  # nearest neighbour


def test_mask_problems_are_refused(tmp_path):
    volume = save(tmp_path / "vol.nii.gz")
    other = save(tmp_path / "vol2.nii.gz")
    label = np.zeros((20, 20, 20), np.float32)
    label[2:5, 2:5, 2:5] = 1
    good_mask = save(tmp_path / "mask.nii.gz", array=label)
    with pytest.raises(DataError, match="2 volume.*1 mask"):
        load_training_volumes([volume, other], masks=[good_mask], patch_size=8)

    wrong_shape = save(tmp_path / "shape_mask.nii.gz", array=label[:10])
    with pytest.raises(DataError, match="shape_mask.nii.gz.*shape.*vol.nii.gz"):
        load_training_volumes([volume], masks=[wrong_shape], patch_size=8)

    wrong_grid = save(tmp_path / "grid_mask.nii.gz", array=label, spacing=(1.5, 1.0, 1.0))
    with pytest.raises(DataError,
                       match=r"grid_mask.nii.gz .spacing 1.5 x 1 x 1 mm.*voxel grid of .*vol"):
        load_training_volumes([volume], masks=[wrong_grid], patch_size=8)

    empty = save(tmp_path / "empty_mask.nii.gz", array=np.zeros((20, 20, 20), np.float32))
    with pytest.raises(DataError, match="empty_mask.nii.gz is empty"):
        load_training_volumes([volume], masks=[empty], patch_size=8)

