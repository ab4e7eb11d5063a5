"""The Train widget in a real viewer, driven as a user would: set the fields, press Start,
wait for the worker; then the checkpoint, the preview layer and the loss plot are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from napari.layers import Layer
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt, QTimer

from napari_medgan._napari.convert import volume_to_layer_data
from napari_medgan._napari.train_widget import PREVIEW_LAYER, TrainWidget
from napari_medgan.core import api

SPACING = (1.5, 1.0, 2.0)  # anisotropic, so a lost pixel size shows


@pytest.fixture
def tiny_config_file(tmp_path):
    """A config with tiny nets: the user's config file, read by the widget's field."""
    config = api.Config()
    config.model.latent_dim = 8
    config.model.g_channels = config.model.d_channels = 4
    config.model.max_channels = 16
    config.model.unet_channels = (4, 8)
    config.model.patchgan_channels = 4
    config.train.checkpoint_every = 1000
    path = tmp_path / "tiny.yaml"
    api.save_config(config, path)
    return path


@pytest.fixture
def brain(real_dir) -> api.Volume:
    t1 = api.read_volume(real_dir / "t1_a.nii.gz")
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return api.Volume(t1.tensor[:, :24, :24, :24].clone(), affine, "brain")


def _add(viewer, volume: api.Volume, name: str, layer_type: str = "image") -> Layer:
    return viewer.add_layer(Layer.create(*volume_to_layer_data(volume, name=name,
                                                               layer_type=layer_type)))


@pytest.fixture
def train_widget(make_napari_viewer, brain, tiny_config_file, tmp_path, qtbot):
    """A viewer with the brain layer and the docked Train widget set for a tiny run."""
    viewer = make_napari_viewer()
    _add(viewer, brain, "brain")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.config_file.value = tiny_config_file
    widget.patch.setValue(16)
    widget.batch.setValue(2)
    widget.steps.setValue(4)
    widget.preview_every.setValue(2)
    widget.device.set_spec("cpu")
    widget.output.set_path(tmp_path / "run")
    return widget


def _errors_since(start: int) -> list[str]:
    return [n.message for n in notification_manager.records[start:]
            if str(n.severity) == "error"]


def _card(folder) -> dict:
    return json.loads((folder / "card.json").read_text())


def _run(qtbot, widget, timeout=120_000):
    """Press Start and wait until the run is over (Start is enabled again)."""
    qtbot.mouseClick(widget.start_button, Qt.LeftButton)
    assert not widget.start_button.isEnabled()  # no second run while one is going
    qtbot.waitUntil(widget.start_button.isEnabled, timeout=timeout)


def test_training_from_a_layer_gives_checkpoint_preview_and_plot(train_widget, qtbot, tmp_path):
    widget, viewer = train_widget, train_widget.viewer
    assert widget.roles["image"].layer_box.currentText() == "brain"
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    _run(qtbot, widget)
    timer.stop()
    card = _card(tmp_path / "run")
    assert card["step"] == 4 and card["task"] == "synthesis"
    preview = viewer.layers[PREVIEW_LAYER]
    assert preview.data.shape == (16, 16, 16)
    np.testing.assert_allclose(preview.scale, SPACING)  # the card's spacing, not 1 mm
    assert widget.plot.history and all(len(s) == 4 for s, _ in widget.plot.history.values())
    assert widget.plot.axes.lines and len(widget.plot.axes.lines[0].get_xdata()) == 4
    assert widget.panel.bar.value() == 4
    # the event loop kept running while training: a 10 ms timer fired all along
    assert len(ticks) >= 20
    assert [layer.name for layer in viewer.layers] == ["brain", PREVIEW_LAYER]


def test_preview_layer_is_made_once_and_updated_in_place(train_widget, qtbot):
    widget, viewer = train_widget, train_widget.viewer
    _run(qtbot, widget)
    first = viewer.layers[PREVIEW_LAYER]
    widget.output.set_path(widget.output.path.parent / "run2")
    widget.seed.setValue(1)
    _run(qtbot, widget)
    assert viewer.layers[PREVIEW_LAYER] is first
    assert len([layer for layer in viewer.layers if layer.name.startswith(PREVIEW_LAYER)]) == 1


#: the ways a run ends early; each must end it at the next step with its checkpoint
ENDINGS = {
    "Stop pressed": lambda qtbot, w: qtbot.mouseClick(w.panel.stop_button, Qt.LeftButton),
    "dock closed": lambda qtbot, w: w.viewer.window.remove_dock_widget(w),  # its close button
    "viewer closed": lambda qtbot, w: w.viewer.close(),  # napari quits its running tasks
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_run_ended_early_stops_at_the_next_step_and_keeps_its_checkpoint(
        train_widget, qtbot, tmp_path, ending):
    widget = train_widget
    widget.steps.setValue(100_000)
    before = widget.viewer.layers["brain"].data.copy()
    qtbot.mouseClick(widget.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.last_event is not None and widget.last_event.step >= 1,
                    timeout=120_000)
    with qtbot.waitSignal(widget.job.worker.finished, timeout=120_000):
        ENDINGS[ending](qtbot, widget)
    assert 1 <= _card(tmp_path / "run")["step"] < 100_000
    if ending != "viewer closed":  # else the widget went with the viewer
        assert widget.last_event.kind == "stopped"
        assert widget.start_button.isEnabled()
        np.testing.assert_array_equal(widget.viewer.layers["brain"].data, before)


def test_resume_continues_the_run_in_its_folder(train_widget, qtbot, tmp_path):
    widget = train_widget
    _run(qtbot, widget)
    widget.resume.set_path(tmp_path / "run")
    assert widget.output.path == tmp_path / "run"  # continuing needs no overwrite question
    widget.steps.setValue(6)
    _run(qtbot, widget)
    assert widget.last_event.kind == "done" and widget.last_event.step == 6
    assert widget.plot.history and min(min(s) for s, _ in widget.plot.history.values()) == 5
    assert _card(tmp_path / "run")["step"] == 6


def test_each_task_shows_only_the_pickers_it_needs(train_widget):
    widget = train_widget
    for task in api.available_tasks():
        widget.task_box.setCurrentText(task)
        assert list(widget.roles) == [i.role for i in api.task_inputs(task)]
    widget.task_box.setCurrentText("segmentation")
    assert "labels" in widget.roles and "target" not in widget.roles
    # pickers of earlier tasks are gone: a new layer reaches only the current ones
    widget.viewer.add_labels(np.zeros((24, 24, 24), np.uint8), name="tissue")
    widget.roles["labels"].layer_box.setCurrentText("tissue")
    assert widget.roles["labels"].layer.name == "tissue"


def test_each_task_shows_its_own_learning_rate_for_d_and_a_config_file_sets_it(
        train_widget, tmp_path):
    widget = train_widget
    widget.task_box.setCurrentText("segmentation")
    assert widget.lr_d.value() == pytest.approx(2e-4)  # pix2pix's
    widget.task_box.setCurrentText("synthesis")  # critics at twice G's rate, measured
    assert widget.lr_d.value() == pytest.approx(4e-4)
    assert widget.config().train.lr_d == pytest.approx(4e-4)
    config = api.Config()
    config.train.lr_d = 1e-4
    widget.config_file.value = api.save_config(config, tmp_path / "slow_critics.yaml")
    assert widget.lr_d.value() == pytest.approx(1e-4)
    assert widget.config().train.lr_d == pytest.approx(1e-4)


def test_a_fresh_panel_trains_the_core_defaults(make_napari_viewer):
    """Every field starts at the core's default, so the panel and the CLI train alike."""
    widget = TrainWidget(make_napari_viewer())
    fields = [("model", "patch_size"), ("train", "steps"), ("train", "batch_size"),
              ("train", "loss"), ("train", "seed"), ("train", "lr_g"),
              ("train", "preview_every")]
    panel, defaults = widget.config(), api.Config()
    for section, field in fields:
        assert getattr(getattr(panel, section), field) == getattr(getattr(defaults, section),
                                                                  field), field
    assert panel.lr_d == defaults.lr_d


def test_the_patch_size_arrows_step_through_powers_of_two(train_widget):
    patch = train_widget.patch
    seen = []
    for _ in range(6):
        patch.stepUp()
        seen.append(patch.value())
    assert seen == [32, 64, 128, 256, 256, 256]  # from the fixture's 16, up to the maximum
    patch.setValue(40)  # typed: one step goes to the power of two on that side
    patch.stepDown()
    assert patch.value() == 32
    patch.setValue(40)
    patch.stepUp()
    assert patch.value() == 64
    patch.stepBy(-3)
    assert patch.value() == 8


# --- bad input: one clear notification, the viewer alive, nothing lost -------------------


def _refused_before_start(widget, qtbot, layer_data, layer_kwargs, match: str):
    viewer = widget.viewer
    viewer.add_image(layer_data, name="bad", **layer_kwargs)
    widget.roles["image"].layer_box.setCurrentText("bad")
    start = len(notification_manager.records)
    qtbot.mouseClick(widget.start_button, Qt.LeftButton)
    errors = _errors_since(start)
    assert len(errors) == 1 and "layer:bad" in errors[0] and match in errors[0]
    assert widget.job is None and widget.start_button.isEnabled()
    assert not widget.output.path.exists()
    assert [layer.name for layer in viewer.layers] == ["brain", "bad"]
    np.testing.assert_array_equal(viewer.layers["bad"].data, layer_data)


def test_a_2d_layer_is_refused(train_widget, qtbot):
    _refused_before_start(train_widget, qtbot, np.zeros((32, 32), np.float32), {}, "2D")


def test_an_rgb_layer_is_refused(train_widget, qtbot):
    _refused_before_start(train_widget, qtbot, np.zeros((32, 32, 32, 3), np.uint8),
                          {"rgb": True}, "RGB")


def test_a_layer_with_a_time_axis_is_refused(train_widget, qtbot):
    _refused_before_start(train_widget, qtbot, np.zeros((3, 24, 24, 24), np.float32), {},
                          "time axis")


def _refused_by_the_core(widget, qtbot, match: str):
    start = len(notification_manager.records)
    before = {layer.name: np.asarray(layer.data).copy() for layer in widget.viewer.layers}
    _run(qtbot, widget)
    errors = _errors_since(start)
    assert len(errors) == 1 and match in errors[0], errors
    assert widget.start_button.isEnabled()
    assert not (widget.output.path / "card.json").exists()
    assert {layer.name for layer in widget.viewer.layers} == set(before)
    for name, data in before.items():
        np.testing.assert_array_equal(widget.viewer.layers[name].data, data)


def test_a_layer_smaller_than_the_patch_is_refused(train_widget, qtbot, brain):
    widget = train_widget
    small = api.Volume(brain.tensor[:, :8, :8, :8].clone(), brain.affine, "small")
    _add(widget.viewer, small, "small")
    widget.roles["image"].layer_box.setCurrentText("small")
    _refused_by_the_core(widget, qtbot, "layer:small")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none_is_refused(train_widget, qtbot):
    train_widget.device.set_spec("cuda")
    _refused_by_the_core(train_widget, qtbot, "no CUDA GPU")


def test_an_existing_output_folder_is_kept(train_widget, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    widget = train_widget
    _run(qtbot, widget)  # a checkpoint in tmp_path / "run"
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a) or QMessageBox.No)
    start = len(notification_manager.records)
    qtbot.mouseClick(widget.start_button, Qt.LeftButton)  # the user declines to replace it
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    widget.output.set_path(tmp_path / "data")
    qtbot.mouseClick(widget.start_button, Qt.LeftButton)  # not a checkpoint: not even asked
    errors = _errors_since(start)
    assert len(asked) == 1 and len(errors) == 2
    assert "already exists" in errors[0] and "not a medgan checkpoint" in errors[1]
    assert widget.start_button.isEnabled() and not widget.job.running
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["notes.txt"]


def test_a_paired_task_trains_on_a_layer_with_its_targets_from_files(train_widget, qtbot,
                                                                    real_dir, tmp_path):
    widget = train_widget
    _add(widget.viewer, api.read_volume(real_dir / "t1_a.nii.gz"), "t1")
    widget.task_box.setCurrentText("translation")
    assert list(widget.roles) == ["image", "target", "mask"]
    widget.roles["image"].layer_box.setCurrentText("t1")
    widget.roles["target"].files.value = [real_dir / "gm_a.nii.gz"]
    widget.steps.setValue(2)
    _run(qtbot, widget)
    card = _card(tmp_path / "run")
    assert card["task"] == "translation" and card["step"] == 2
    assert "t1" in json.dumps(card["data"]) and "gm_a.nii.gz" in json.dumps(card["data"])
    preview = widget.viewer.layers[PREVIEW_LAYER]
    assert preview.data.shape == (16, 16, 16)
    np.testing.assert_allclose(preview.scale, [1.0, 1.0, 1.0])  # this run's card: 1 mm


@pytest.mark.parametrize("broken", ["missing", "corrupt"])
def test_resuming_from_a_broken_checkpoint_is_refused(train_widget, qtbot, tmp_path, broken):
    widget = train_widget
    folder = tmp_path / "old"
    if broken == "corrupt":
        folder.mkdir()
        (folder / "card.json").write_text("{not json")
    widget.resume.set_path(folder)
    assert widget.resume.card is None and widget.resume.summary.text()  # the picker says why
    start = len(notification_manager.records)
    qtbot.mouseClick(widget.start_button, Qt.LeftButton)
    errors = _errors_since(start)
    assert len(errors) == 1 and str(folder) in errors[0]
    assert widget.job is None and not widget.output.path.exists()  # no fresh run instead
