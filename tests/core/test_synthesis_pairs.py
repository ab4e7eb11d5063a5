"""Synthesis with label maps: a generator of (image, label map) pairs on real MNI152 crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.checkpoint import load_checkpoint
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.errors import CheckpointError, ConfigError


def tiny(real_dir, labels: str | None = "labels_a.nii.gz", steps: int = 4):
    """A tiny synthesis config on t1_a, with the label maps ``labels`` (a crop's name or path)."""
    config = api.Config()
    config.data.paths = [str(real_dir / "t1_a.nii.gz")]
    if labels is not None:
        config.data.labels = [str(real_dir / labels)]
    config.model.patch_size = 16
    config.model.latent_dim = 8
    config.model.g_channels = config.model.d_channels = 4
    config.model.max_channels = 16
    config.train.steps, config.train.batch_size, config.train.device = steps, 2, "cpu"
    config.train.checkpoint_every = config.train.preview_every = 100
    config.data.sampler = "device"  # the sampler whose state resumes exactly
    return config


def trained(config, out, **kwargs):
    events = list(api.train(config, out, **kwargs))
    assert events[-1].kind == "done"
    return events


@pytest.fixture(scope="module")
def paired(real_dir, tmp_path_factory):
    """A tiny synthesis model trained on t1_a with its tissue labels (0, 1 GM, 2 WM)."""
    out = tmp_path_factory.mktemp("pairs") / "ckpt"
    return out, trained(tiny(real_dir), out)


def test_the_card_says_which_classes_the_model_draws(paired):
    out, events = paired
    card = api.read_card(out)
    assert card["generates_labels"] is True
    assert card["num_classes"] == 3 and card["label_values"] == [0, 1, 2]
    assert card["class_names"] == ["background", "class 1", "class 2"]
    assert all(np.isfinite(v) for e in events if e.kind == "step" for v in e.losses.values())
    weights = load_checkpoint(out).weights
    # G draws 1 image channel + 3 class channels; D judges the 4 together
    assert weights["G.head.0.weight"].shape[0] == 4
    assert weights["D.net.0.weight"].shape[1] == 4
    preview = [e.preview for e in events if e.preview is not None][-1]
    assert preview.tensor.shape == (1, 16, 16, 16)  # the image only


def test_pairs_are_integer_label_maps_on_their_patches_grid(paired):
    out, _ = paired
    model = api.load_model(out)
    assert model.generates_labels
    pairs = api.synthesize_pairs(model, n=3, seed=1)
    images = api.synthesize(model, n=3, seed=1)
    assert len(pairs) == 3
    for (image, labels), alone in zip(pairs, images, strict=True):
        assert torch.equal(image.tensor, alone.tensor)  # synthesize gives the same patches
        assert image.tensor.dtype == torch.float32 and image.tensor.shape == (1, 16, 16, 16)
        assert labels.tensor.dtype == torch.uint8
        assert labels.tensor.shape == image.tensor.shape
        np.testing.assert_array_equal(labels.affine, image.affine)
        assert set(labels.tensor.unique().tolist()) <= {0, 1, 2}
        assert labels.name == f"{image.name}_labels"
    drawn = torch.cat([labels.tensor for _, labels in pairs]).unique().tolist()
    assert len(drawn) >= 2, drawn  # not a constant map


def test_label_values_come_back_as_given_0_and_255(real_dir, tmp_path):
    labels = read_volume(real_dir / "labels_a.nii.gz")
    mask = Volume((labels.tensor > 0).to(torch.uint8) * 255, labels.affine, "mask255")
    write_volume(mask, tmp_path / "mask255.nii.gz")
    trained(tiny(real_dir, labels=tmp_path / "mask255.nii.gz"), tmp_path / "ckpt")
    model = api.load_model(tmp_path / "ckpt")
    assert model.card["label_values"] == [0, 255]
    pairs = api.synthesize_pairs(model, n=4, seed=0)
    drawn = set(torch.cat([labels.tensor for _, labels in pairs]).unique().tolist())
    assert drawn == {0, 255}
    assert all(labels.tensor.dtype == torch.uint8 for _, labels in pairs)


def test_a_model_without_labels_is_as_before_and_refuses_pairs(real_dir, tmp_path):
    trained(tiny(real_dir, labels=None), tmp_path / "plain")
    card = api.read_card(tmp_path / "plain")
    assert "generates_labels" not in card and "class_names" not in card
    assert card["num_classes"] == 0
    model = api.load_model(tmp_path / "plain")
    assert not model.generates_labels
    assert len(api.synthesize(model, n=2)) == 2
    with pytest.raises(ConfigError, match="without label maps.*--labels"):
        api.synthesize_pairs(model, n=2)


def test_a_model_of_another_task_cant_synthesize_pairs(conditional_config, tmp_path):
    out = tmp_path / "seg"
    trained(conditional_config("segmentation", 1, labels=["labels_a.nii.gz"]), out)
    with pytest.raises(CheckpointError, match="can't synthesize"):
        api.synthesize_pairs(out)


def test_pairs_survive_the_checkpoint_and_files(paired, tmp_path):
    out, _ = paired
    first = api.synthesize_pairs(out, n=2, seed=7)
    again = api.synthesize_pairs(api.load_model(out), n=2, seed=7)
    for (image, labels), (image2, labels2) in zip(first, again, strict=True):
        assert torch.equal(image.tensor, image2.tensor)
        assert torch.equal(labels.tensor, labels2.tensor)
    image, labels = first[0]
    write_volume(image, tmp_path / "p.nii.gz")
    write_volume(labels, tmp_path / "p_labels.nii.gz")
    read = read_volume(tmp_path / "p_labels.nii.gz")
    assert torch.equal(read.tensor.long(), labels.tensor.long())
    np.testing.assert_allclose(read.affine, read_volume(tmp_path / "p.nii.gz").affine)


def test_a_resumed_labelled_run_matches_an_uninterrupted_one(real_dir, tmp_path):
    whole = [e.losses for e in trained(tiny(real_dir, steps=6), tmp_path / "whole")
             if e.kind == "step"]
    trained(tiny(real_dir, steps=3), tmp_path / "part")
    resumed = trained(tiny(real_dir, steps=6), tmp_path / "part", resume=tmp_path / "part")
    assert [e.losses for e in resumed if e.kind == "step"] == whole[3:]
    assert api.read_card(tmp_path / "part")["generates_labels"] is True
    without = tiny(real_dir, labels=None, steps=8)  # other labels: refused, nothing lost
    with pytest.raises(ConfigError, match="knows 3 classes"):
        trained(without, tmp_path / "part", resume=tmp_path / "part")
    assert api.read_card(tmp_path / "part")["step"] == 6


def test_evaluate_judges_the_images_of_a_labelled_model(paired, real_dir):
    out, _ = paired
    report = api.evaluate(out, [real_dir / "t1_b.nii.gz"], n=8, training=[])
    json.dumps(report)
    assert report["n_synthetic"] == 8 and np.isfinite(report["mmd_synthetic_vs_held_out"])


@pytest.mark.parametrize(("edit", "message"), [
    ({"generates_labels": True, "num_classes": 0, "label_values": [],
      "class_names": []}, "only a synthesis model"),
    ({"class_names": ["background"]}, "one name per class"),
])
def test_an_edited_card_with_inconsistent_label_fields_is_refused(paired, tmp_path, edit,
                                                                   message):
    out, _ = paired
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in out.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    card = json.loads((copy / "card.json").read_text())
    card.update(edit)
    (copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=message):
        api.load_model(copy)


def test_a_mask_places_every_patch_of_a_pairs_model_without_it_labels_place_half(
        real_dir, tmp_path):
    """Label maps centre ``label_share`` of the patches on labels and the rest anywhere,
    unless a --mask says where patches go: then the mask places them all (it used to be
    dropped without a word)."""
    from napari_medgan.core.data.task_data import load_task_data
    from napari_medgan.core.tasks.synthesis import SynthesisTask

    t1 = read_volume(real_dir / "t1_a.nii.gz")
    mask = torch.zeros_like(t1.tensor)
    mask[:, 15:25, 15:25, 15:25] = 1  # a cube in the middle, unlike the labels
    mask_path = write_volume(Volume(mask, t1.affine), tmp_path / "t1_a_mask.nii.gz")
    labels = read_volume(real_dir / "labels_a.nii.gz").tensor
    config = tiny(real_dir)
    data = load_task_data(config, SynthesisTask.needs)
    assert data.mask_share == config.data.label_share == 0.5
    assert torch.equal(data.sampling_masks[0], labels > 0)
    config.data.masks = [str(mask_path)]
    data = load_task_data(config, SynthesisTask.needs)
    assert data.mask_share == 1.0 and torch.equal(data.sampling_masks[0].bool(), mask.bool())
