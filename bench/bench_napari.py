"""Event-loop lag of a real napari viewer while the Train and Apply widgets work.

A 10 ms ``QTimer`` runs on the GUI thread; each tick's delay past its 10 ms is the time
the viewer could not answer the user. Measured idle (baseline), while the Train widget
trains, and while the Apply widget applies a model to the whole MNI152 T1 volume.
Goal: p99 < 100 ms. Needs a display: ``xvfb-run -a python bench/bench_napari.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from _common import report
from napari.layers import Layer
from qtpy.QtCore import QEventLoop, QTimer

from napari_medgan._napari.apply_widget import ApplyWidget
from napari_medgan._napari.convert import volume_to_layer_data
from napari_medgan._napari.train_widget import TrainWidget
from napari_medgan.core import api

TICK_MS = 10


def lag_while(start, is_done, seconds_cap: float = 600.0) -> tuple[np.ndarray, float]:
    """Delays (ms) of a 10 ms timer from ``start()`` until ``is_done()``, and the wall time."""
    ticks: list[float] = []
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(TICK_MS)

    def tick() -> None:
        ticks.append(time.perf_counter())
        if is_done() or ticks[-1] - ticks[0] > seconds_cap:
            loop.quit()

    timer.timeout.connect(tick)
    timer.start()
    begun = time.perf_counter()
    start()
    loop.exec_()
    timer.stop()
    gaps = np.diff(ticks) * 1000.0
    return np.maximum(gaps - TICK_MS, 0.0), time.perf_counter() - begun


def row(what: str, delays: np.ndarray, seconds: float) -> list:
    p50, p99 = np.percentile(delays, [50, 99])
    return [what, f"{seconds:.1f}", len(delays), f"{p50:.1f}", f"{p99:.1f}",
            f"{delays.max():.1f}", "yes" if p99 < 100 else "NO"]


def tiny_nets(config: api.Config) -> api.Config:
    """The demo's nets: DCGAN-3D G width 8 / D width 16, a small U-Net and PatchGAN."""
    config.model.latent_dim, config.model.g_channels, config.model.d_channels = 64, 8, 16
    config.model.max_channels = 128
    config.model.unet_channels, config.model.patchgan_channels = (8, 16, 32), 16
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60, help="training steps measured")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medgan-bench-napari-"))

    viewer = napari.Viewer(show=True)
    t1 = api.sample_volume("mni152_t1")
    gm = api.sample_volume("mni152_gm")
    viewer.add_layer(Layer.create(*volume_to_layer_data(t1, name="t1")))
    rows = []
    idle_until = time.perf_counter() + 3.0
    delays, seconds = lag_while(lambda: None, lambda: time.perf_counter() > idle_until)
    rows.append(row("idle viewer", delays, seconds))

    config_file = tmp / "nets.yaml"
    config = tiny_nets(api.Config())
    config.train.checkpoint_every = 10**9
    api.save_config(config, config_file)
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    train.config_file.value = config_file
    train.patch.setValue(args.patch)
    train.batch.setValue(args.batch)
    train.steps.setValue(args.steps)
    train.preview_every.setValue(10)
    train.device.set_spec(args.device)
    train.output.set_path(tmp / "synthesis")
    delays, seconds = lag_while(train.start, lambda: not train.job.running)
    assert train.last_event is not None and train.last_event.kind == "done", train.last_event
    rows.append(row(f"Train widget: {args.steps} steps, preview every 10", delays, seconds))

    translation = tiny_nets(api.Config())
    translation.task = "translation"
    translation.model.patch_size = args.patch
    translation.train.steps, translation.train.batch_size = 2, 2
    translation.train.device = args.device
    for _ in api.train(translation, tmp / "translation", volumes={"image": [t1], "target": [gm]}):
        pass
    apply = ApplyWidget(viewer)
    viewer.window.add_dock_widget(apply, name="Apply")
    apply.checkpoint.set_path(tmp / "translation")
    apply.input.setCurrentText("t1")
    apply.overlap.setValue(0.25)
    apply.device.set_spec(args.device)
    layers_before = len(viewer.layers)
    delays, seconds = lag_while(apply.start, lambda: not apply.job.running)
    assert len(viewer.layers) == layers_before + 1, "the apply gave no layer"
    shape = "×".join(map(str, t1.spatial_shape))
    rows.append(row(f"Apply widget: {shape} volume, overlap 0.25", delays, seconds))

    report("napari", ["while", "s", "ticks", "lag p50 ms", "lag p99 ms", "max ms", "p99 < 100"],
           rows, {"patch": args.patch, "batch": args.batch, "device": args.device,
                  "tick_ms": TICK_MS})
    viewer.close()


if __name__ == "__main__":
    main()
