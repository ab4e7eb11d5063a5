"""Helpers of the Synthesize and Apply widget tests: tiny checkpoints of each task (trained
in seconds, once per session) and the notifications a test caused."""

from __future__ import annotations

from pathlib import Path

from napari_medgan.core import api

_TRAINED: dict[tuple[str, Path], Path] = {}

#: task → (data fields with crop file names, train fields): the fewest steps that give a
#: checkpoint each task can use (anomaly: past its GAN phase, so its encoder is trained).
_RECIPES = {
    "synthesis": ({}, {"steps": 2}),
    "synthesis_pairs": ({"labels": ["labels_a.nii.gz"]}, {"steps": 2}),  # image + label pairs
    "translation": ({"targets": ["gm_a.nii.gz"]}, {"steps": 2}),
    "cycle": ({"targets": ["gm_a.nii.gz"], "target_modality": "mr"},
              {"steps": 1, "identity_weight": 0.0}),
    "segmentation": ({"labels": ["labels_a.nii.gz"]}, {"steps": 2}),
    "inpainting": ({}, {"steps": 2}),
    "anomaly": ({}, {"steps": 4, "n_critic": 1, "encoder_fraction": 0.5}),
}


def tiny_checkpoint(task: str, real_dir: Path, out: Path) -> Path:
    """A checkpoint of ``task`` trained on the t1_a crop, under ``out`` (cached per session)."""
    key = (task, Path(real_dir))
    if key not in _TRAINED:
        data, train = _RECIPES[task]
        config = api.Config()
        config.task = task.removesuffix("_pairs")
        config.data.paths = [str(real_dir / "t1_a.nii.gz")]
        for name, value in data.items():
            files = name in ("targets", "labels")
            setattr(config.data, name, [str(real_dir / v) for v in value] if files else value)
        m = config.model
        m.patch_size, m.latent_dim, m.g_channels, m.d_channels, m.max_channels = 16, 8, 4, 4, 16
        m.unet_channels, m.patchgan_channels = (8, 16), 8
        t = config.train
        t.batch_size, t.device, t.checkpoint_every, t.preview_every = 2, "cpu", 1000, 1000
        for name, value in train.items():
            setattr(t, name, value)
        list(api.train(config, out / task))
        _TRAINED[key] = out / task
    return _TRAINED[key]


class Notifications:
    """The notifications napari shows from now on: ``[(severity, message)]``."""

    def __init__(self) -> None:
        from napari.utils.notifications import notification_manager

        self._manager = notification_manager
        self._start = len(notification_manager.records)

    def __iter__(self):
        records = self._manager.records[self._start:]
        return iter([(str(n.severity), n.message) for n in records])

    def errors(self) -> list[str]:
        return [message for severity, message in self if severity == "error"]


def docked(make_napari_viewer, widget_class, name: str):
    """A real viewer with ``widget_class`` docked in it, as the plugin menu does."""
    viewer = make_napari_viewer()
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=name)
    return viewer, widget
