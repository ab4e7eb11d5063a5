"""The Synthesize widget in a real viewer: generate patches, check their quality."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from medgan_widget_helpers import Notifications, docked, tiny_checkpoint
from napari.layers import Image, Labels
from qtpy.QtCore import Qt

from napari_medgan._napari.convert import layer_to_volume
from napari_medgan._napari.synthesize_widget import SynthesizeWidget
from napari_medgan.core import api


@pytest.fixture(scope="module")
def models(real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthesis-models")
    return lambda task: tiny_checkpoint(task, real_dir, out)


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    return docked(make_napari_viewer, SynthesizeWidget, "Synthesize")


def _press(qtbot, widget: SynthesizeWidget, button) -> None:
    with qtbot.waitSignal(widget.run_finished, timeout=120_000):
        qtbot.mouseClick(button, Qt.LeftButton)


def test_generated_patches_are_layers_named_after_checkpoint_and_seed_side_by_side(
        qtbot, viewer_and_widget, models, real_dir):
    viewer, widget = viewer_and_widget
    viewer.open(str(real_dir / "t1_b.nii.gz"), plugin="napari-medgan")
    checkpoint = models("synthesis")
    widget.checkpoint.set_path(checkpoint)
    assert "synthesis model" in widget.checkpoint.summary.text()
    assert "MR signal" in widget.hint.text()
    widget.count.setValue(3)
    widget.seed.setValue(7)
    _press(qtbot, widget, widget.generate_button)
    names = [f"synthesis seed 7 #{i}" for i in range(3)]
    assert [layer.name for layer in viewer.layers] == ["t1_b", *names]
    expected = api.synthesize(checkpoint, n=3, seed=7)
    spacing = api.read_card(checkpoint)["spacing"]
    starts = []
    for name, volume in zip(names, expected, strict=True):
        layer = viewer.layers[name]
        assert isinstance(layer, Image) and layer.data.shape == (16, 16, 16)
        np.testing.assert_allclose(np.abs(layer.scale), spacing)
        assert layer.metadata["seed"] == 7
        assert layer.metadata["intensity_units"].startswith("MR")
        assert torch.equal(layer_to_volume(layer).tensor, volume.tensor)
        starts.append(layer.translate)
    axis = viewer.dims.displayed[-1]  # side by side along the view's horizontal axis,
    gaps = np.diff([s[axis] for s in starts])
    assert np.all(gaps >= 16 * spacing[axis])  # not overlapping
    point = np.asarray(viewer.dims.point)  # around the slice in view
    middle = viewer.layers[names[1]]
    centre = middle.data_to_world(np.array(middle.data.shape) / 2 - 0.5)
    np.testing.assert_allclose(np.delete(centre, axis), np.delete(point, axis), atol=1.0)


def test_a_labelled_model_adds_each_patch_with_its_labels_layer_on_the_same_grid(
        qtbot, viewer_and_widget, models):
    viewer, widget = viewer_and_widget
    checkpoint = models("synthesis_pairs")
    widget.checkpoint.set_path(checkpoint)
    assert "label map (background = 0, class 1 = 1, class 2 = 2)" in widget.hint.text()
    widget.count.setValue(2)
    widget.seed.setValue(3)
    _press(qtbot, widget, widget.generate_button)
    stem = f"{checkpoint.name} seed 3"
    assert [layer.name for layer in viewer.layers] == [
        f"{stem} #0", f"{stem} #0 labels", f"{stem} #1", f"{stem} #1 labels"]
    expected = api.synthesize_pairs(checkpoint, n=2, seed=3)
    for index, (image, labels) in enumerate(expected):
        image_layer = viewer.layers[f"{stem} #{index}"]
        labels_layer = viewer.layers[f"{stem} #{index} labels"]
        assert isinstance(image_layer, Image) and isinstance(labels_layer, Labels)
        assert np.issubdtype(labels_layer.data.dtype, np.integer)
        assert labels_layer.data.shape == image_layer.data.shape == (16, 16, 16)
        np.testing.assert_array_equal(labels_layer.affine.affine_matrix,
                                      image_layer.affine.affine_matrix)
        np.testing.assert_allclose(labels_layer.scale, image_layer.scale)
        np.testing.assert_allclose(labels_layer.translate, image_layer.translate)
        back = layer_to_volume(labels_layer)
        assert torch.equal(back.tensor.long(), labels.tensor.long())  # the label values
        np.testing.assert_allclose(back.affine, layer_to_volume(image_layer).affine)
        assert torch.equal(layer_to_volume(image_layer).tensor, image.tensor)
    assert set(np.unique(viewer.layers[f"{stem} #0 labels"].data).tolist()) <= {0, 1, 2}
    assert viewer.layers[f"{stem} #0"].translate[viewer.dims.displayed[-1]] != \
        viewer.layers[f"{stem} #1"].translate[viewer.dims.displayed[-1]]  # side by side


def test_a_model_of_another_task_points_to_the_apply_widget(viewer_and_widget, models):
    _, widget = viewer_and_widget
    widget.checkpoint.set_path(models("translation"))
    assert "Apply widget" in widget.hint.text()
    assert not widget.generate_button.isEnabled() and not widget.quality_button.isEnabled()


def test_check_quality_explains_the_numbers_realism_first(qtbot, viewer_and_widget,
                                                               models, real_dir):
    viewer, widget = viewer_and_widget
    viewer.open(str(real_dir / "t1_b.nii.gz"), plugin="napari-medgan")
    widget.checkpoint.set_path(models("synthesis"))
    widget.held_out_layer.setCurrentText("t1_b")
    widget.patches.setValue(8)
    _press(qtbot, widget, widget.quality_button)
    lines = widget.quality.text().splitlines()
    assert lines[0].startswith("Realism: ") and "0.5 = indistinguishable" in lines[0]
    assert any(line.startswith("Memorisation: ") and "%" in line for line in lines)
    assert any(line.startswith("MMD synthetic vs held-out") for line in lines)
    assert any("mode collapse" in line for line in lines)
    assert widget.quality_button.isEnabled()


def test_memorisation_of_a_model_trained_on_a_layer_uses_that_open_layer(
        qtbot, viewer_and_widget, real_dir, tmp_path):
    viewer, widget = viewer_and_widget
    layer, = viewer.open(str(real_dir / "t1_a.nii.gz"), plugin="napari-medgan")
    config = api.Config()
    m = config.model
    m.patch_size, m.latent_dim, m.g_channels, m.d_channels, m.max_channels = 16, 8, 4, 4, 16
    config.train.steps, config.train.batch_size, config.train.device = 2, 2, "cpu"
    list(api.train(config, tmp_path / "from-layer", volumes={"image": [layer_to_volume(layer)]}))
    widget.checkpoint.set_path(tmp_path / "from-layer")
    assert "layer:t1_a" in widget.checkpoint.summary.text()
    widget.held_out_files.value = [real_dir / "t1_b.nii.gz"]  # held out as a file this time
    widget.patches.setValue(8)
    _press(qtbot, widget, widget.quality_button)
    text = widget.quality.text()
    assert "of synthetic patches are closer" in text and "training region: AUC" in text


def test_ct_patches_come_in_hounsfield_units(qtbot, viewer_and_widget, real_dir, tmp_path):
    viewer, widget = viewer_and_widget
    config = api.Config()
    config.data.paths, config.data.modality = [str(real_dir / "ct_a.nii.gz")], "ct"
    m = config.model
    m.patch_size, m.latent_dim, m.g_channels, m.d_channels, m.max_channels = 16, 8, 4, 4, 16
    config.train.steps, config.train.batch_size, config.train.device = 1, 2, "cpu"
    list(api.train(config, tmp_path / "ct"))
    widget.checkpoint.set_path(tmp_path / "ct")
    assert "HU" in widget.hint.text()
    widget.count.setValue(1)
    _press(qtbot, widget, widget.generate_button)
    layer = viewer.layers["ct seed 0 #0"]
    assert layer.metadata["intensity_units"] == "HU"
    assert layer.data.min() >= -1000 - 1e-3 and layer.data.max() <= 1000 + 1e-3  # the HU window


def test_a_held_out_layer_smaller_than_the_patch_is_reported_and_nothing_is_lost(
        qtbot, viewer_and_widget, models):
    viewer, widget = viewer_and_widget
    small = viewer.add_image(np.random.rand(10, 10, 10).astype(np.float32), name="small")
    widget.checkpoint.set_path(models("synthesis"))
    widget.held_out_layer.setCurrentText("small")
    shown = Notifications()
    _press(qtbot, widget, widget.quality_button)
    assert any("patch size 16 does not fit in layer:small" in m for m in shown.errors())
    assert widget.quality.text() == "" and widget.quality_button.isEnabled()
    assert list(viewer.layers) == [small]


def test_missing_or_corrupt_checkpoints_say_so_and_generate_nothing(
        qtbot, viewer_and_widget, models, tmp_path):
    viewer, widget = viewer_and_widget
    widget.checkpoint.set_path(tmp_path / "gone")
    assert not widget.generate_button.isEnabled()
    shown = Notifications()
    widget.generate()
    assert any("synthesis checkpoint" in m for m in shown.errors())

    damaged = tmp_path / "damaged"
    shutil.copytree(models("synthesis"), damaged)
    (damaged / "model.safetensors").write_bytes(b"\x00" * 3)
    widget.checkpoint.set_path(damaged)
    _press(qtbot, widget, widget.generate_button)
    assert any(str(damaged) in m and "damaged" in m for m in shown.errors())
    assert len(viewer.layers) == 0 and widget.generate_button.isEnabled()
