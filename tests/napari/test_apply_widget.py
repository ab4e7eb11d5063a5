"""The Apply widget in a real viewer, driven as a user does: choose, press Apply, wait."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from medgan_widget_helpers import Notifications, docked, tiny_checkpoint
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from scipy.spatial.transform import Rotation

from napari_medgan._napari.apply_widget import ApplyWidget
from napari_medgan.core import api

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")


@pytest.fixture(scope="module")
def models(real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("apply-models")
    return lambda task: tiny_checkpoint(task, real_dir, out)


@pytest.fixture(scope="module")
def oblique_file(real_dir, tmp_path_factory):
    """The held-out T1 crop, tilted, with LPS-running, anisotropic voxels, as a NRRD file."""
    t1 = api.read_volume(real_dir / "t1_b.nii.gz")
    affine = np.eye(4)
    affine[:3, :3] = (Rotation.from_euler("y", 12, degrees=True).as_matrix()
                      @ np.diag([-1.0, -1.2, 1.5]))
    affine[:3, 3] = [20.0, -30.0, 5.5]
    path = tmp_path_factory.mktemp("oblique") / "t1_oblique.nrrd"
    return api.write_volume(api.Volume(t1.tensor[:, :, :32, :36].clone(), affine, "t1"), path)


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    return docked(make_napari_viewer, ApplyWidget, "Apply")


def _apply(qtbot, widget: ApplyWidget) -> None:
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        qtbot.mouseClick(widget.run_button, Qt.LeftButton)


def test_translation_gives_an_image_on_the_inputs_exact_geometry(
        qtbot, viewer_and_widget, models, oblique_file):
    viewer, widget = viewer_and_widget
    source, = viewer.open(str(oblique_file), plugin="napari-medgan")
    widget.checkpoint.set_path(models("translation"))
    widget.input.setCurrentText(source.name)
    assert not widget.mask.isVisibleTo(widget) and not widget.reverse.isVisibleTo(widget)
    widget.overlap.setValue(0.25)
    widget.batch.setValue(8)
    _apply(qtbot, widget)
    result = viewer.layers[f"{source.name} translation"]
    assert isinstance(result, Image) and result.data.shape == source.data.shape
    np.testing.assert_allclose(result.affine.affine_matrix, source.affine.affine_matrix)
    np.testing.assert_allclose(result.scale, source.scale)
    np.testing.assert_allclose(result.translate, source.translate)
    assert result.metadata["affine"] == source.metadata["affine"]
    assert result.metadata["axes"] == source.metadata["axes"]
    assert result.metadata["checkpoint"] == str(models("translation"))
    assert 0.0 <= result.data.min() and result.data.max() <= 1.0 + 1e-4  # GM probability units
    assert widget.run_button.isEnabled()


def test_segmentation_gives_labels_and_anomaly_a_blended_map_with_its_score(
        qtbot, viewer_and_widget, models, real_dir):
    viewer, widget = viewer_and_widget
    source, = viewer.open(str(real_dir / "t1_b.nii.gz"), plugin="napari-medgan")
    widget.checkpoint.set_path(models("segmentation"))
    _apply(qtbot, widget)
    labels = viewer.layers["t1_b segmentation"]
    assert isinstance(labels, Labels) and np.issubdtype(labels.data.dtype, np.integer)
    assert set(np.unique(labels.data)) <= {0, 1, 2}
    np.testing.assert_allclose(labels.scale, source.scale)
    np.testing.assert_allclose(labels.translate, source.translate)

    widget.checkpoint.set_path(models("anomaly"))
    _apply(qtbot, widget)
    anomaly = viewer.layers["t1_b anomaly"]
    assert anomaly.colormap.name == "inferno" and anomaly.blending == "additive"
    assert anomaly.data.shape == source.data.shape and anomaly.data.min() >= 0
    score = api.anomaly_score(api.Volume(torch.from_numpy(anomaly.data[None].copy()), np.eye(4)))
    assert f"{score:.4g}" in widget.score.text()


def test_inpainting_needs_a_mask_layer_and_keeps_voxels_outside_it(
        qtbot, viewer_and_widget, models, real_dir):
    viewer, widget = viewer_and_widget
    source, = viewer.open(str(real_dir / "t1_b.nii.gz"), plugin="napari-medgan")
    widget.checkpoint.set_path(models("inpainting"))
    assert widget.mask.isVisibleTo(widget)
    shown = Notifications()
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert any("choose a mask layer" in m for m in shown.errors())
    assert [layer.name for layer in viewer.layers] == ["t1_b"]  # nothing added or lost

    hole = np.zeros(source.data.shape, np.uint8)
    hole[10:20, 12:22, 14:24] = 1
    viewer.add_labels(hole, name="hole", scale=source.scale, translate=source.translate,
                      metadata={k: source.metadata[k] for k in ("affine", "axes")})
    widget.mask.setCurrentText("hole")
    _apply(qtbot, widget)
    filled = viewer.layers["t1_b inpainting"].data
    np.testing.assert_allclose(filled[hole == 0], source.data[hole == 0])
    assert not np.allclose(filled[hole == 1], source.data[hole == 1])


def test_cycle_models_offer_the_reverse_direction(qtbot, viewer_and_widget, models, real_dir):
    viewer, widget = viewer_and_widget
    viewer.open(str(real_dir / "gm_b.nii.gz"), plugin="napari-medgan")
    widget.checkpoint.set_path(models("cycle"))
    assert widget.reverse.isVisibleTo(widget)
    widget.reverse.setChecked(True)
    _apply(qtbot, widget)
    assert viewer.layers["gm_b cycle reverse"].data.shape == viewer.layers["gm_b"].data.shape


def test_a_synthesis_checkpoint_points_to_the_synthesize_widget(viewer_and_widget, models):
    _, widget = viewer_and_widget
    widget.checkpoint.set_path(models("synthesis"))
    assert "Synthesize widget" in widget.hint.text()
    assert not widget.run_button.isEnabled()


def test_missing_and_corrupt_checkpoints_are_reported_and_nothing_is_lost(
        qtbot, viewer_and_widget, models, real_dir, tmp_path):
    viewer, widget = viewer_and_widget
    viewer.open(str(real_dir / "t1_b.nii.gz"), plugin="napari-medgan")
    widget.checkpoint.set_path(tmp_path / "nothing-here")
    assert not widget.run_button.isEnabled()
    assert "checkpoint" in widget.checkpoint.summary.text().lower()

    damaged = tmp_path / "damaged"
    shutil.copytree(models("translation"), damaged)
    (damaged / "model.safetensors").write_bytes(b"not a safetensors file")
    widget.checkpoint.set_path(damaged)
    shown = Notifications()
    _apply(qtbot, widget)
    assert any(str(damaged) in m for m in shown.errors())
    assert [layer.name for layer in viewer.layers] == ["t1_b"]
    assert widget.run_button.isEnabled()


def test_a_2d_layer_is_refused_by_name_before_any_run(qtbot, viewer_and_widget, models):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.rand(40, 40).astype(np.float32), name="slice")
    widget.checkpoint.set_path(models("translation"))
    shown = Notifications()
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert widget.job is None
    assert any("layer:slice is a 2D image" in m for m in shown.errors())
    assert [layer.name for layer in viewer.layers] == ["slice"]


def test_a_layer_smaller_than_the_patch_is_padded_and_keeps_its_shape(
        qtbot, viewer_and_widget, models, real_dir):
    viewer, widget = viewer_and_widget
    t1 = viewer.open(str(real_dir / "t1_b.nii.gz"), plugin="napari-medgan")[0]
    small = viewer.add_image(t1.data[:10, :12, :40].copy(), name="small", scale=t1.scale,
                             translate=t1.translate)
    widget.checkpoint.set_path(models("translation"))
    widget.input.setCurrentText("small")
    _apply(qtbot, widget)
    result = viewer.layers["small translation"]
    assert result.data.shape == small.data.shape == (10, 12, 40)
    np.testing.assert_allclose(result.scale, small.scale)


def test_cancel_stops_the_run_and_adds_nothing(qtbot, viewer_and_widget, models, real_dir):
    viewer, widget = viewer_and_widget
    viewer.open(str(real_dir / "t1_b.nii.gz"), plugin="napari-medgan")
    widget.checkpoint.set_path(models("translation"))
    widget.overlap.setValue(0.875)
    widget.batch.setValue(1)  # many small batches: the stop flag is read before each
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        qtbot.mouseClick(widget.run_button, Qt.LeftButton)
        qtbot.mouseClick(widget.panel.stop_button, Qt.LeftButton)
    assert [layer.name for layer in viewer.layers] == ["t1_b"]
    assert widget.run_button.isEnabled()
