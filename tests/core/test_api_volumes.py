"""Volumes already in memory (a napari layer, a Slicer node) train and evaluate like files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.checkpoint import CARD_FILE
from napari_medgan.core.errors import ConfigError, DataError


def _in_memory(path, name: str) -> api.Volume:
    volume = api.read_volume(path)
    return api.Volume(volume.tensor.clone(), volume.affine, name)


def _card(checkpoint) -> dict:
    return json.loads((checkpoint / CARD_FILE).read_text())


def test_synthesis_trains_on_a_volume_in_memory_and_the_card_names_it(tiny_config, real_dir,
                                                                       tmp_path):
    config = tiny_config()
    config.data.paths = [str(tmp_path / "never-read.nii.gz")]  # the given role replaces it
    layer = _in_memory(real_dir / "t1_a.nii.gz", "layer:T1")
    events = list(api.train(config, tmp_path / "ckpt", volumes={"image": [layer]}))
    assert events[-1].kind == "done"
    card = _card(tmp_path / "ckpt")
    assert card["data"]["files"] == ["layer:T1"]
    assert card["data"]["shapes"] == [[40, 40, 40]]
    assert card["config"]["data"]["paths"] == [str(tmp_path / "never-read.nii.gz")]
    np.testing.assert_allclose(card["spacing"], layer.spacing)
    assert api.synthesize(tmp_path / "ckpt", n=1)[0].tensor.shape == (1, 16, 16, 16)


def test_an_in_memory_role_mixes_with_files_for_the_others(conditional_config, real_dir,
                                                           tmp_path):
    config = conditional_config("segmentation", 2, labels=["labels_a.nii.gz"])
    labels = _in_memory(real_dir / "labels_a.nii.gz", "layer:tissue")
    labels.tensor = labels.tensor.to(torch.uint8)  # a Labels layer's integers
    list(api.train(config, tmp_path / "seg", volumes={"labels": [labels]}))
    card = _card(tmp_path / "seg")
    assert card["data"]["files"] == [str(real_dir / "t1_a.nii.gz")]
    assert card["data"]["label_files"] == ["layer:tissue"]
    assert card["num_classes"] == 3


def test_a_bad_in_memory_volume_is_refused_by_its_name(tiny_config, tmp_path):
    flat = api.Volume(torch.rand(1, 40, 40, 1), np.eye(4), "layer:slice")
    with pytest.raises(DataError, match="layer:slice is a 2D image"):
        list(api.train(tiny_config(), tmp_path / "ckpt", volumes={"image": [flat]}))
    with pytest.raises(ConfigError, match="roles are image, target, labels, mask"):
        list(api.train(tiny_config(), tmp_path / "ckpt", volumes={"images": [flat]}))
    assert not (tmp_path / "ckpt").exists()


def test_evaluate_takes_volumes_for_held_out_data_and_training_data(tiny_config, real_dir,
                                                                    tmp_path):
    layer = _in_memory(real_dir / "t1_a.nii.gz", "layer:T1")
    list(api.train(tiny_config(), tmp_path / "ckpt", volumes={"image": [layer]}))
    held_out = _in_memory(real_dir / "t1_b.nii.gz", "layer:T1 held out")
    without = api.evaluate(tmp_path / "ckpt", [held_out], n=8)
    assert "memorisation_fraction_suspiciously_close" not in without  # layer:T1 is no file
    report = api.evaluate(tmp_path / "ckpt", [held_out], n=8, training=[layer])
    assert 0.0 <= report["memorisation_fraction_suspiciously_close"] <= 1.0
    assert report["held_out_files"] == ["layer:T1 held out"]


def test_evaluate_takes_volumes_for_inputs_and_truths(conditional_config, real_dir, tmp_path):
    config = conditional_config("translation", 2, targets=["gm_a.nii.gz"])
    list(api.train(config, tmp_path / "t1_to_gm"))
    report = api.evaluate(tmp_path / "t1_to_gm", [_in_memory(real_dir / "t1_b.nii.gz", "layer:a")],
                          target=[_in_memory(real_dir / "gm_b.nii.gz", "layer:b")])
    assert report["n_volumes"] == 1 and report["volumes"][0]["file"] == "layer:a"
    from_files = api.evaluate(tmp_path / "t1_to_gm", [real_dir / "t1_b.nii.gz"],
                              target=[real_dir / "gm_b.nii.gz"])
    assert report["mean"] == pytest.approx(from_files["mean"])
