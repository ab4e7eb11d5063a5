"""Screenshots of the docked widgets for the README, taken from a real viewer with real data.

Needs a display (``xvfb-run -a python docs/screenshots.py``); writes ``docs/napari_train.png``:
the Train widget training the demo's DCGAN-3D on the MNI152 T1 sample, mid-run, with its
loss plot and the preview patch beside the volume (grid view).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import napari
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

from napari_medgan._napari.train_widget import TrainWidget

DOCS = Path(__file__).resolve().parent
DEMO_CONFIG = DOCS.parent / "demo" / "demo_config.yaml"


def wait_until(done: Callable[[], bool], timeout_s: float = 900.0) -> None:
    """Run the event loop until ``done()`` (checked every 100 ms) or the timeout."""
    loop, timer, deadline = QEventLoop(), QTimer(), time.perf_counter() + timeout_s
    timer.timeout.connect(lambda: (done() or time.perf_counter() > deadline) and loop.quit())
    timer.start(100)
    loop.exec_()
    timer.stop()


def train_screenshot(path: Path, steps_shown: int = 150) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-medgan", "mni152_t1")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train", area="right")
    widget.config_file.value = DEMO_CONFIG
    widget.patch.setValue(32)
    widget.batch.setValue(8)
    widget.steps.setValue(2000)
    widget.preview_every.setValue(25)
    widget.device.set_spec("cpu")
    widget.output.set_path(Path(tempfile.mkdtemp(prefix="medgan-shot-")) / "synthesis")
    widget.start()
    wait_until(lambda: widget.last_event is not None and widget.last_event.step >= steps_shown)
    viewer.grid.enabled = True  # the volume and the preview patch side by side
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers[-1]
    for toast in QApplication.allWidgets():  # start-up notices over the canvas
        if type(toast).__name__ == "NapariQtNotification":
            toast.close()
    wait_until(lambda: False, timeout_s=1.5)  # let the canvas and the plot draw
    viewer.screenshot(str(path), canvas_only=False)
    widget.stop()
    wait_until(lambda: not widget.job.running)
    viewer.close()


if __name__ == "__main__":
    train_screenshot(DOCS / "napari_train.png")
