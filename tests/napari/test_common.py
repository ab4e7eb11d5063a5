"""The widget plumbing: runs in napari workers with progress and stop, errors as
notifications, and the checkpoint / device / output pickers."""

from __future__ import annotations

import threading

import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QMessageBox

from napari_medgan._napari.common import (
    CheckpointPicker,
    DeviceChooser,
    Job,
    OutputFolder,
    ProgressPanel,
)
from napari_medgan.core import api
from napari_medgan.core.errors import DataError, OutputError, OutputExistsError


@pytest.fixture
def notifications():
    """The notifications napari shows during the test: ``[(severity, message)]``."""
    before = len(notification_manager.records)

    class Shown:
        def __iter__(self):
            records = notification_manager.records[before:]
            return iter([(str(n.severity), n.message) for n in records])

    return Shown()


def _counter(release: threading.Event, *, stop):
    """Yields steps until stopped; waits for ``release`` first so the test can press Stop."""
    for step in range(1000):
        release.wait(5)
        if stop():
            yield ("stopped", step)
            return
        yield ("step", step)


def test_stop_button_ends_a_generator_run_through_its_own_stop_flag(qtbot):
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    yielded, finished = [], []
    release = threading.Event()
    job = Job("Test", _counter, release, panel=panel, on_yield=yielded.append,
              on_finished=lambda: finished.append(True))
    job.start(panel)
    assert job.running
    qtbot.mouseClick(panel.stop_button, Qt.LeftButton)
    with qtbot.waitSignal(job.worker.finished, timeout=10_000):
        release.set()
    assert finished == [True]
    assert yielded[-1][0] == "stopped"
    assert not panel.stop_button.isEnabled()


def test_quit_as_napari_asks_on_window_close_sets_the_stop_flag(qtbot):
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    release = threading.Event()
    job = Job("Test", _counter, release, panel=panel)
    job.worker.quit()  # what napari's window close calls on a running task
    assert job.stop_event.is_set()
    assert not job.worker.abort_requested  # the generator is not abandoned mid-step


def test_a_core_error_is_one_notification_naming_the_run(qtbot, notifications):
    panel = ProgressPanel()
    qtbot.addWidget(panel)

    def fails(stop):
        raise DataError("layer:brain is a 2D image (shape (1, 64, 64)); a 3D volume is needed.")

    finished = []
    job = Job("Train", fails, panel=panel, on_finished=lambda: finished.append(True))
    with qtbot.waitSignal(job.worker.finished, timeout=10_000):
        job.start(panel)
    assert finished == [True]
    assert [(severity, message.split(";")[0]) for severity, message in notifications] == [
        ("error", "Train: layer:brain is a 2D image (shape (1, 64, 64))")]


def test_progress_panel_shows_rate_and_eta(qtbot):
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    panel.begin(100)
    panel.show_progress(25, 100, rate=5.0, eta_s=15.0)
    assert panel.bar.value() == 25 and panel.bar.maximum() == 100
    assert "5.00 steps/s" in panel.rate_label.text() and "ETA 0:15" in panel.rate_label.text()


def test_output_folder_replaces_only_a_checkpoint_and_only_when_asked(qtbot, tmp_path,
                                                                       monkeypatch, tiny_config):
    out = OutputFolder()
    qtbot.addWidget(out)
    with pytest.raises(OutputExistsError, match="No output folder"):
        out.checked()
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or answer[0])
    answer = [QMessageBox.Yes]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scan.nii.gz").write_text("mine")
    out.set_path(tmp_path / "data")
    with pytest.raises(OutputError, match="not a medgan checkpoint"):
        out.checked()  # a folder of other files: refused without a question
    assert not asked and (tmp_path / "data" / "scan.nii.gz").read_text() == "mine"

    for _ in api.train(tiny_config(steps=2), tmp_path / "run"):
        pass
    out.set_path(tmp_path / "run")
    answer[0] = QMessageBox.No
    with pytest.raises(OutputExistsError, match="already exists"):
        out.checked()
    assert len(asked) == 1 and (tmp_path / "run" / "card.json").is_file()  # nothing lost
    assert out.checked(continuing=tmp_path / "run") == (tmp_path / "run", False)  # resuming
    answer[0] = QMessageBox.Yes
    assert out.checked() == (tmp_path / "run", True)
    out.set_path(tmp_path / "new")
    assert out.checked() == (tmp_path / "new", False)
    (tmp_path / "empty").mkdir()  # made in the folder dialog: nothing in it to lose
    out.set_path(tmp_path / "empty")
    assert out.checked() == (tmp_path / "empty", False)
    out.set_path(tmp_path / "data" / "run")
    with pytest.raises(OutputError, match="input"):  # a checkpoint never swallows its data
        out.checked(inputs=[str(tmp_path / "data" / "run" / "x.nii.gz")])


def test_device_chooser_lists_the_core_devices(qtbot):
    chooser = DeviceChooser()
    qtbot.addWidget(chooser)
    assert [chooser.itemData(i) for i in range(chooser.count())] == [
        spec for _, spec in api.device_choices()]
    assert chooser.spec == "auto"
    chooser.set_spec("cuda:3")
    assert chooser.spec == "cuda:3" and "not found" in chooser.currentText()


def test_checkpoint_picker_reads_the_card(qtbot, tmp_path, tiny_config):
    for _ in api.train(tiny_config(), tmp_path / "ckpt"):
        pass
    picker = CheckpointPicker()
    qtbot.addWidget(picker)
    with qtbot.waitSignal(picker.card_changed) as signal:
        picker.set_path(tmp_path / "ckpt")
    assert signal.args[0]["task"] == "synthesis"
    assert "synthesis model" in picker.summary.text() and "step 4 of 4" in picker.summary.text()
    picker.set_path(tmp_path / "missing")
    assert picker.card is None and "does not exist" in picker.summary.text()
