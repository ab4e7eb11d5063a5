"""Pairing volumes with their partners by name, and the one voxel-grid check, on real files."""

import json
import math

import numpy as np
import pytest
import torch

from napari_medgan.core.api import json_safe
from napari_medgan.core.data.io import write_volume
from napari_medgan.core.data.pairs import (
    check_same_grid,
    label_values,
    match_pairs,
    to_classes,
)
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.errors import DataError, MedGANWarning


def files(folder, *names):
    folder.mkdir(exist_ok=True)
    ramp = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(1, 8, 8, 8)
    return [write_volume(Volume(ramp, np.eye(4), n), folder / f"{n}.nii.gz") for n in names]


def test_exact_names_pair_whatever_the_order(tmp_path):
    images = files(tmp_path / "img", "a", "b")
    labels = files(tmp_path / "lab", "b", "a", "c")  # an extra label map is left alone
    pairing = match_pairs(images, tmp_path / "lab", "label map")
    assert [p.name for p in pairing.partners] == ["a.nii.gz", "b.nii.gz"]
    assert pairing.matched_by == "name"
    assert pairing.record()["pairs"] == [[str(images[0]), str(labels[1])],
                                         [str(images[1]), str(labels[0])]]


def test_partner_endings_pair_when_unambiguous_and_the_exact_name_wins(tmp_path):
    images = files(tmp_path / "img", "ct_01", "ct_02")
    files(tmp_path / "lab", "ct_02_seg", "ct_01_seg")
    pairing = match_pairs(images, tmp_path / "lab", "label map")
    assert [p.name for p in pairing.partners] == ["ct_01_seg.nii.gz", "ct_02_seg.nii.gz"]
    files(tmp_path / "both", "ct_01", "ct_01_mask", "ct_02_mask")
    pairing = match_pairs(images, tmp_path / "both", "mask")
    assert [p.name for p in pairing.partners] == ["ct_01.nii.gz", "ct_02_mask.nii.gz"]


def test_a_partial_match_is_refused_with_both_lists(tmp_path):
    """The bug: a ↔ lab/c by order while a's own name matched; now refused."""
    images = files(tmp_path / "img", "a", "b")
    files(tmp_path / "lab", "a", "c")
    both_lists = r"Volumes: a\.nii\.gz, b\.nii\.gz; label maps: a\.nii\.gz, c\.nii\.gz"
    with pytest.raises(DataError, match=r"b has no label map\(s\) of its name.*" + both_lists):
        match_pairs(images, tmp_path / "lab", "label map")
    files(tmp_path / "two", "a_seg", "a_mask", "b")
    with pytest.raises(DataError, match=r"a has 2 label map\(s\) of its name \(a_mask.*a_seg"):
        match_pairs(images, tmp_path / "two", "label map")


def test_unrelated_names_pair_by_order_with_a_warning(tmp_path):
    images = files(tmp_path / "img", "x", "y")
    files(tmp_path / "lab", "p", "q")
    with pytest.warns(MedGANWarning, match="by order.*x.nii.gz ↔ p.nii.gz, y.nii.gz ↔ q.nii.gz"):
        pairing = match_pairs(images, tmp_path / "lab", "label map")
    assert pairing.matched_by == "order"
    files(tmp_path / "one", "p")
    with pytest.raises(DataError, match="2 volume.*but 1 label map"):
        match_pairs(images, tmp_path / "one", "label map")


def test_the_grid_check_names_only_what_differs():
    image = Volume(torch.zeros(1, 8, 8, 8), np.diag([1.0, 1.0, 2.0, 1.0]), "ct")
    shifted = image.affine.copy()
    shifted[:3, 3] = (50.0, 0.0, 0.0)
    with pytest.raises(DataError) as caught:
        check_same_grid(Volume(image.tensor, shifted), image, "lab.nii.gz", "ct.nii.gz",
                        what="label map", advice="register them")
    message = str(caught.value)
    assert "origin (50, 0, 0) mm against (0, 0, 0) mm" in message
    assert "shape" not in message and "spacing" not in message and "direction" not in message
    flipped = image.affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
    with pytest.raises(DataError, match=r"\(direction \[\[-1\.0, 0\.0, 0\.0\].*against"):
        check_same_grid(Volume(image.tensor, flipped), image, "lab", "ct", what="mask",
                        advice="resample it")
    check_same_grid(Volume(image.tensor, image.affine + 1e-5), image, "lab", "ct",
                    what="mask", advice="")  # within the tolerance of float32 headers


def test_label_values_become_classes_and_back():
    maps = [Volume(torch.tensor([0.0, 255.0, 255.0]).reshape(1, 3, 1, 1), np.eye(4)),
            Volume(torch.tensor([255.0, 7.0, 255.0]).reshape(1, 3, 1, 1), np.eye(4))]
    values = label_values(maps)
    assert values == [0, 7, 255]
    assert to_classes(maps[1].tensor, values).flatten().tolist() == [2.0, 1.0, 2.0]
    assert label_values([maps[1]]) == [0, 7, 255]  # background is class 0 even when absent


def test_reports_are_strict_json_with_a_note_for_each_non_number():
    report = json_safe({"mean": {"hd95_1": math.inf, "dice_1": 0.5},
                        "volumes": [{"file": "a", "psnr": math.nan}], "notes": ["kept"]})
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text)["mean"] == {"hd95_1": None, "dice_1": 0.5}
    assert report["volumes"][0]["psnr"] is None
    assert report["notes"][0] == "kept" and len(report["notes"]) == 3
    assert "mean.hd95_1 is inf" in report["notes"][1]


def test_apply_checks_a_face_volume_as_it_checks_a_file(tmp_path, tiny_config):
    """A napari layer or Slicer node handed over as a Volume gets the file checks too."""
    from napari_medgan.core import api

    config = tiny_config()
    config.task = "translation"
    config.model.unet_channels = (4, 8)
    config.model.patchgan_channels = 4
    config.data.targets = list(config.data.paths)
    config.train.steps = 1
    list(api.train(config, tmp_path / "ckpt"))
    nan = torch.zeros(1, 16, 16, 16)
    nan[0, 0, 0, 0] = math.nan
    with pytest.raises(DataError, match="input layer has 1 NaN voxel"):
        api.apply(tmp_path / "ckpt", Volume(nan, np.eye(4), "layer"))
