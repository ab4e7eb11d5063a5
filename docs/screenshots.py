"""Screenshots of the docked widgets for the README, taken from a real viewer with real data.

Needs a display: ``xvfb-run -a python docs/screenshots.py train synthesize apply`` (any of
the three) writes ``docs/napari_<name>.png``:

- ``train``: the Train widget training the demo's DCGAN-3D on the MNI152 T1 sample, mid-run,
  with its loss plot and the preview patch beside the volume (grid view);
- ``synthesize``: the Synthesize widget with four generated patches as layers, from the
  synthesis checkpoint given with ``--synthesis`` (trained as in the README's walk-through:
  ``medgan train --config demo/demo_config.yaml --data t1.nii.gz --mask brain.nii.gz
  --patch 32 --steps 500 --out synthesis``);
- ``apply``: the Apply widget with the grey / white matter Labels layer a segmentation model
  (``--segmentation``, trained on the T1 with the shipped GM and WM maps thresholded at 0.5)
  made from the T1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

from napari_medgan._napari.apply_widget import ApplyWidget
from napari_medgan._napari.model_widget import ModelWidget
from napari_medgan._napari.synthesize_widget import SynthesizeWidget
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


def viewer_with_t1() -> napari.Viewer:
    """A shown viewer of the size the pictures have, with the MNI152 T1 sample open."""
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-medgan", "mni152_t1")
    return viewer


def take(viewer: napari.Viewer, path: Path) -> None:
    """Close the start-up notices over the canvas, let everything draw, save the window."""
    for toast in QApplication.allWidgets():
        if type(toast).__name__ == "NapariQtNotification":
            toast.close()
    wait_until(lambda: False, timeout_s=1.5)
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")


def train_screenshot(path: Path, steps_shown: int = 150) -> None:
    viewer = viewer_with_t1()
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
    take(viewer, path)
    widget.stop()
    wait_until(lambda: not widget.job.running)
    viewer.close()


def zoom_to(viewer: napari.Viewer, layers: list) -> None:
    """Centre the 2D view on ``layers`` and zoom until they fill 90 % of the canvas."""
    viewer.reset_view()
    shown = list(viewer.dims.displayed)
    low = np.min([layer.extent.world[0][shown] for layer in layers], axis=0)
    high = np.max([layer.extent.world[1][shown] for layer in layers], axis=0)
    everything = viewer.layers.extent.world[:, shown]
    viewer.scene.camera.center = tuple((low + high) / 2)
    viewer.scene.camera.zoom *= 0.9 * np.min((everything[1] - everything[0]) / (high - low))


def run_and_wait(widget: ModelWidget, start: Callable[[], None]) -> None:
    """Press the widget's run button (``start``) and wait for its run to end."""
    ended = []
    widget.run_finished.connect(lambda: ended.append(True))
    start()
    wait_until(lambda: bool(ended))


def docked_with_checkpoint(widget_class: type, name: str, checkpoint: Path):
    """A viewer showing the T1, with ``widget_class`` docked and ``checkpoint`` chosen in it."""
    viewer = viewer_with_t1()
    widget = widget_class(viewer)
    widget.setMinimumWidth(440)  # the whole form, nothing cut at the right
    viewer.window.add_dock_widget(widget, name=name, area="right")
    widget.checkpoint.set_path(checkpoint)
    return viewer, widget


def synthesize_screenshot(path: Path, checkpoint: Path) -> None:
    viewer, widget = docked_with_checkpoint(SynthesizeWidget, "Synthesize", checkpoint)
    widget.count.setValue(4)
    widget.seed.setValue(0)
    widget.device.set_spec("cpu")
    run_and_wait(widget, widget.generate)
    patches = list(viewer.layers)[1:]
    for layer in patches:
        layer.reset_contrast_limits()  # "auto-contrast: once" on each patch
    viewer.layers[0].visible = False  # the patches alone, not over the T1's slice
    zoom_to(viewer, patches)
    take(viewer, path)
    viewer.close()


def apply_screenshot(path: Path, checkpoint: Path) -> None:
    viewer, widget = docked_with_checkpoint(ApplyWidget, "Apply", checkpoint)
    widget.input.setCurrentText(viewer.layers[0].name)
    widget.overlap.setValue(0.25)
    widget.batch.setValue(16)
    widget.device.set_spec("cpu")
    run_and_wait(widget, widget.start)
    viewer.layers[-1].opacity = 0.5  # the labels over the T1
    viewer.reset_view()
    take(viewer, path)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pictures", nargs="+", choices=["train", "synthesize", "apply"])
    parser.add_argument("--synthesis", type=Path, help="synthesis checkpoint folder")
    parser.add_argument("--segmentation", type=Path, help="segmentation checkpoint folder")
    args = parser.parse_args()
    checkpoint_for = {"synthesize": "synthesis", "apply": "segmentation"}
    for name in set(args.pictures) & checkpoint_for.keys():
        if getattr(args, checkpoint_for[name]) is None:
            parser.error(f"the {name} picture needs --{checkpoint_for[name]} CKPT_DIR")
    for name in args.pictures:
        path = DOCS / f"napari_{name}.png"
        if name == "train":
            train_screenshot(path)
        elif name == "synthesize":
            synthesize_screenshot(path, args.synthesis)
        else:
            apply_screenshot(path, args.segmentation)


if __name__ == "__main__":
    main()
