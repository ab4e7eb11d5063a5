"""The Train dock widget: train any task on open layers or files, watching the losses
and a preview patch, with Stop keeping the checkpoint.

Everything about tasks comes from the core (``api.available_tasks``, ``api.task_inputs``);
the widget only collects settings into a :class:`api.Config` and runs ``api.train`` in a
napari worker (see :mod:`.common`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import FileEdit
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medgan.core import api
from napari_medgan.core.errors import ConfigError, MedGANError

from .common import (
    CheckpointPicker,
    DeviceChooser,
    Job,
    LayerChooser,
    OutputFolder,
    ProgressPanel,
    report_error,
)
from .convert import layer_to_volume, volume_to_layer_data

PREVIEW_LAYER = "medgan preview"
PLOT_INTERVAL_S = 1.0  # the loss plot is redrawn at most this often: a draw blocks the GUI
#: the Config.data field each role's files go to
ROLE_PATHS = {"image": "paths", "target": "targets", "labels": "labels", "mask": "masks"}


def _train_events(config: api.Config, out: Path, *, stop, resume: Path | None,
                  volumes: dict[str, list[api.Volume]],
                  overwrite: bool) -> Iterator[api.TrainEvent]:
    """``api.train`` as a generator function, so napari runs it as a generator worker."""
    yield from api.train(config, out, stop=stop, resume=resume, volumes=volumes or None,
                         overwrite=overwrite)


class RoleInput(QWidget):
    """One kind of training volume (image, target, labels, mask): an open layer, or files."""

    def __init__(self, viewer: napari.Viewer, task_input: api.TaskInput) -> None:
        super().__init__()
        self.task_input = task_input
        self.layer_box = LayerChooser(viewer, (Image, Labels), optional=not task_input.required)
        self.files = FileEdit(mode="rm", nullable=True, label="or files")
        self.files.native.setToolTip("Volume files or folders; used instead of the layer.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.layer_box)
        layout.addWidget(self.files.native)
        self.setToolTip(task_input.meaning)

    @property
    def paths(self) -> list[str]:
        return [str(p) for p in (self.files.value or ())]

    @property
    def layer(self) -> Layer | None:
        return self.layer_box.layer()


class LossPlot(FigureCanvasQTAgg):
    """The losses so far, one line each; redrawn with ``draw_idle`` at most once a second.

    Fixed margins, not a tight layout: laying out again on every draw tripled its cost.
    """

    def __init__(self) -> None:
        self.figure = Figure(figsize=(4, 2.4), dpi=80)
        super().__init__(self.figure)
        self.axes = self.figure.add_subplot()
        self.figure.subplots_adjust(left=0.16, right=0.97, bottom=0.2, top=0.95)
        self.setMinimumHeight(180)
        self.history: dict[str, tuple[list[int], list[float]]] = {}
        self._lines: dict[str, Any] = {}
        self._drawn_at = 0.0
        self.clear()

    def clear(self) -> None:
        self.history.clear()
        self._lines.clear()
        self.axes.clear()
        self.axes.set_xlabel("step")
        self.axes.set_ylabel("loss")
        self.draw_idle()

    def add(self, step: int, losses: dict[str, float], *, force: bool = False) -> None:
        for name, value in losses.items():
            steps, values = self.history.setdefault(name, ([], []))
            steps.append(step)
            values.append(value)
        if force or time.perf_counter() - self._drawn_at >= PLOT_INTERVAL_S:
            self.redraw()

    def redraw(self) -> None:
        for name, (steps, values) in self.history.items():
            if name not in self._lines:
                (self._lines[name],) = self.axes.plot([], [], label=name, linewidth=1)
                self.axes.legend(loc="upper right", fontsize="small")
            self._lines[name].set_data(steps, values)
        self.axes.relim()
        self.axes.autoscale_view()
        self.draw_idle()
        self._drawn_at = time.perf_counter()


class TrainWidget(QWidget):
    """Train a task from the viewer; the preview layer and loss plot follow the run."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.job: Job | None = None
        self.last_event: api.TrainEvent | None = None

        self.task_box = QComboBox()
        self.task_box.addItems(api.available_tasks())
        defaults = api.Config()
        self.task_box.setCurrentText(defaults.task)  # the core's default task
        self.inputs_box = QGroupBox("Training data")
        self.inputs_form = QFormLayout(self.inputs_box)
        self.roles: dict[str, RoleInput] = {}

        self.config_file = FileEdit(mode="r", nullable=True, filter="*.yaml *.yml *.json")
        self.config_file.native.setToolTip("Optional: a medgan config (model sizes and all "
                                           "settings); its values fill the fields below.")
        self.patch = _spin(8, 256, defaults.model.patch_size, kind=_PowerOfTwoSpinBox)
        self.steps = _spin(1, 10_000_000, defaults.train.steps)
        self.batch = _spin(1, 1024, defaults.train.batch_size)
        self.loss = QComboBox()
        self.loss.addItems(api.LOSSES)
        self.lr_g, self.lr_d = _rate(defaults.train.lr_g), _rate(defaults.lr_d)
        self.seed = _spin(0, 2**31 - 1, defaults.train.seed)
        self.preview_every = _spin(1, 1_000_000, defaults.train.preview_every)
        self.device = DeviceChooser()
        self.output = OutputFolder(label="")
        self.resume = CheckpointPicker(label="")

        settings = QGroupBox("Settings")
        form = QFormLayout(settings)
        form.addRow("Config file", self.config_file.native)
        form.addRow("Patch size", self.patch)
        form.addRow("Steps", self.steps)
        form.addRow("Batch", self.batch)
        form.addRow("Loss", self.loss)
        form.addRow("Learning rate G", self.lr_g)
        form.addRow("Learning rate D", self.lr_d)
        form.addRow("Seed", self.seed)
        form.addRow("Preview every", self.preview_every)
        form.addRow("Device", self.device)
        form.addRow("Output folder", self.output)
        form.addRow("Resume from", self.resume)

        self.start_button = QPushButton("Start")
        self.panel = ProgressPanel("Stop")
        self.plot = LossPlot()
        layout = QVBoxLayout(self)
        task_row = QFormLayout()
        task_row.addRow("Task", self.task_box)
        layout.addLayout(task_row)
        layout.addWidget(self.inputs_box)
        layout.addWidget(settings)
        layout.addWidget(self.start_button)
        layout.addWidget(self.panel)
        layout.addWidget(self.plot)
        layout.addWidget(QLabel(f"The preview patch is shown as the layer '{PREVIEW_LAYER}'."))

        self.task_box.currentTextChanged.connect(self._show_task)
        self.config_file.changed.connect(self._load_config_file)
        self.resume.card_changed.connect(self._load_resume_card)
        self.start_button.clicked.connect(self.start)
        self._show_task(self.task_box.currentText())

    # --- settings -----------------------------------------------------------------------

    def _show_task(self, task: str) -> None:
        """Only the pickers this task trains on, and its own learning rate for D."""
        self.lr_d.setValue(api.Config(task=task).lr_d)
        while self.inputs_form.rowCount():
            self.inputs_form.removeRow(0)
        self.roles = {i.role: RoleInput(self.viewer, i) for i in api.task_inputs(task)}
        for role, picker in self.roles.items():
            label = role if picker.task_input.required else f"{role} (optional)"
            self.inputs_form.addRow(label, picker)

    def _show_config(self, config: api.Config) -> None:
        self.task_box.setCurrentText(config.task)
        self.patch.setValue(config.model.patch_size)
        self.steps.setValue(config.train.steps)
        self.batch.setValue(config.train.batch_size)
        self.loss.setCurrentText(config.train.loss)
        self.lr_g.setValue(config.train.lr_g)
        self.lr_d.setValue(config.lr_d)
        self.seed.setValue(config.train.seed)
        self.preview_every.setValue(config.train.preview_every)

    def _load_config_file(self) -> None:
        if self.config_file.value is None:
            return
        try:
            self._show_config(api.load_config(self.config_file.value))
        except MedGANError as err:
            report_error("Train", err)
            self.config_file.value = None

    def _load_resume_card(self, card: dict[str, Any] | None) -> None:
        """Resuming continues the card's run: its settings, more steps, the same folder."""
        if card is None:
            return
        try:
            config = api.Config.from_dict(card["config"], source=f"the card of {self.resume.path}")
        except MedGANError as err:
            report_error("Train", err)
            return
        step = int(card["step"])  # a stopped run goes on to its total; a finished one doubles
        config.train.steps = config.train.steps if step < config.train.steps else 2 * step
        self._show_config(config)
        self.output.set_path(self.resume.path)

    def config(self) -> api.Config:
        """The settings as a Config: the resumed card's, or the config file's, then the fields."""
        if self.resume.card is not None:
            config = api.Config.from_dict(self.resume.card["config"])
        elif self.config_file.value is not None:
            config = api.load_config(self.config_file.value)
        else:
            config = api.Config()
        config.task = self.task_box.currentText()
        config.model.patch_size = self.patch.value()
        train = config.train
        train.steps, train.batch_size = self.steps.value(), self.batch.value()
        train.loss, train.seed = self.loss.currentText(), self.seed.value()
        train.lr_g, train.lr_d = self.lr_g.value(), self.lr_d.value()
        train.preview_every, train.device = self.preview_every.value(), self.device.spec
        for field in ROLE_PATHS.values():  # the data is what the pickers say, nothing older
            setattr(config.data, field, [])
        config.validate()
        return config

    def training_inputs(self, config: api.Config) -> dict[str, list[api.Volume]]:
        """Files go into ``config``; chosen layers come back as volumes by role."""
        volumes = {}
        for role, picker in self.roles.items():
            if picker.paths:
                setattr(config.data, ROLE_PATHS[role], picker.paths)
            elif picker.layer is not None:
                volumes[role] = [layer_to_volume(picker.layer)]
            elif picker.task_input.required:
                raise ConfigError(f"The {config.task} task needs {picker.task_input.meaning}: "
                                  f"pick a layer or files for '{role}'.")
        return volumes

    # --- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Check the settings and inputs here (errors as notifications), then train in a worker."""
        if self.job is not None and self.job.running:
            return
        try:
            if self.resume.path is not None and self.resume.card is None:
                api.read_card(self.resume.path)  # a folder that can't be resumed says why
            config = self.config()
            volumes = self.training_inputs(config)
            resume = self.resume.path if self.resume.card is not None else None
            out, overwrite = self.output.checked(continuing=resume,
                                                 inputs=api.training_inputs(config))
        except MedGANError as err:
            report_error("Train", err)
            return
        self.plot.clear()
        self.last_event = None
        self.job = Job("Train", _train_events, config, out, resume=resume, volumes=volumes,
                       overwrite=overwrite, panel=self.panel, on_yield=self._on_event,
                       on_finished=self._on_finished)
        self.start_button.setEnabled(False)
        self.job.start(self, total=config.train.steps)

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    def _on_event(self, event: api.TrainEvent) -> None:
        self.last_event = event
        if event.kind == "start":
            if event.message:
                show_info(f"Train: {event.message}")
            return
        if event.kind == "step":
            self.panel.show_progress(event.step, event.total, event.steps_per_s, event.eta_s)
            self.plot.add(event.step, event.losses, force=event.preview is not None)
            if event.preview is not None:
                self._show_preview(event.preview)
            return
        self.plot.redraw()  # done or stopped
        self.panel.show_progress(event.step, event.total)
        self.panel.end(f"{event.message}: {event.checkpoint}")
        show_info(f"Train: {event.message} in {event.checkpoint}")

    def _show_preview(self, volume: api.Volume) -> None:
        """One preview layer, created once and then updated in place with the card's spacing."""
        data, kwargs, _ = volume_to_layer_data(volume, name=PREVIEW_LAYER)
        if PREVIEW_LAYER in self.viewer.layers and isinstance(
                self.viewer.layers[PREVIEW_LAYER], Image):
            layer = self.viewer.layers[PREVIEW_LAYER]
            # every assignment redraws the layer (~25 ms here), even of an equal value: the
            # geometry is set only when a new run changed it
            for key in ("scale", "translate"):
                if key in kwargs and not np.allclose(getattr(layer, key), kwargs[key]):
                    setattr(layer, key, kwargs[key])
            if "affine" in kwargs and not np.allclose(layer.affine.affine_matrix,
                                                      kwargs["affine"]):
                layer.affine = kwargs["affine"]
            if layer.metadata != kwargs["metadata"]:
                layer.metadata = kwargs["metadata"]
            layer.data = data
            layer.reset_contrast_limits()
        else:
            if PREVIEW_LAYER in self.viewer.layers:  # a layer of another kind took the name
                self.viewer.layers.remove(PREVIEW_LAYER)
            self.viewer.add_image(data, **kwargs)

    def _on_finished(self) -> None:
        self.start_button.setEnabled(True)


def _spin(low: int, high: int, value: int, kind: type[QSpinBox] = QSpinBox) -> QSpinBox:
    box = kind()
    box.setRange(low, high)
    box.setValue(value)
    return box


class _PowerOfTwoSpinBox(QSpinBox):
    """A spin box whose arrows double and halve: patch sizes are powers of two (a typed
    value that is not one gets the config's error when training starts)."""

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt's name)
        value = self.value()
        below = 1 << (value.bit_length() - 1)  # the power of two at or below the value
        if steps > 0:
            self.setValue(below << steps)
        else:  # from 40 one step down is 32, from 32 it is 16
            self.setValue(below >> (-steps - (value != below)))


def _rate(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(6)
    box.setRange(1e-6, 1.0)
    box.setSingleStep(1e-4)
    box.setValue(value)
    return box
