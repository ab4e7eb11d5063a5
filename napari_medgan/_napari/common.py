"""What every medgan widget shares: background runs with progress and stop, error
notifications, and the checkpoint, device and output-folder pickers.

Work runs in napari's own workers (:func:`napari.qt.threading.create_worker`), so
napari lists it as a running task and asks before a window with training in it is
closed. Quitting such a worker (window close, napari's cancel) sets the run's stop
flag instead of abandoning the generator: the core then ends at its next step and
writes its checkpoint, as the Stop button does.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from magicgui.widgets import FileEdit
from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from napari.utils.notifications import notification_manager, show_error, show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medgan.core import api
from napari_medgan.core.errors import MedGANError, OutputExistsError


class _Stoppable:
    """Worker side of a run's stop flag; ``quit()`` asks the core to stop, keeping its work."""

    stop_event: threading.Event

    def quit(self) -> None:
        self.stop_event.set()


class StoppableGeneratorWorker(_Stoppable, GeneratorWorker):
    """A generator run (training) whose quit() ends it at the core's next step."""


class StoppableFunctionWorker(_Stoppable, FunctionWorker):
    """A function run (apply, evaluate) whose quit() stops it at the core's next check."""


def _rate_text(done: int, total: int, rate: float, eta_s: float) -> str:
    if rate <= 0:
        return f"{done} / {total}"
    minutes, seconds = divmod(int(round(eta_s)), 60)
    return f"{done} / {total} · {rate:.2f} steps/s · ETA {minutes}:{seconds:02d}"


class ProgressPanel(QWidget):
    """A progress bar, a line with steps/s and ETA, and the Stop button of one run."""

    #: (done, total): thread-safe, so a core ``progress`` callback may emit it from a worker
    reported = Signal(int, int)

    def __init__(self, stop_text: str = "Stop", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.rate_label = QLabel("")
        self.stop_button = QPushButton(stop_text)
        self.stop_button.setEnabled(False)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.rate_label)
        self._started = time.perf_counter()
        self._first_done = 0
        self.reported.connect(self.show_progress)

    def begin(self, total: int, text: str = "starting…") -> None:
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(0)
        self.rate_label.setText(text)
        self.stop_button.setEnabled(True)
        self._started, self._first_done = time.perf_counter(), -1

    def show_progress(self, done: int, total: int, rate: float | None = None,
                      eta_s: float | None = None) -> None:
        """Move the bar; without ``rate`` the panel measures it from its own reports."""
        if self._first_done < 0:  # a resumed run starts past 0: rate counts from here
            self._started, self._first_done = time.perf_counter(), done
        if rate is None:
            elapsed = time.perf_counter() - self._started
            rate = (done - self._first_done) / elapsed if elapsed > 0 else 0.0
            eta_s = (total - done) / rate if rate > 0 else 0.0
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(min(done, total))
        self.rate_label.setText(_rate_text(done, total, rate, eta_s or 0.0))

    def end(self, text: str) -> None:
        self.stop_button.setEnabled(False)
        self.rate_label.setText(text)


class Job(QObject):
    """One background run of a widget: napari worker, stop flag, progress panel.

    ``function`` runs in a worker thread, called with ``stop=`` a callable that says
    whether the user asked to stop (the core's ``train`` and ``apply`` take it as is);
    a generator function's values go to ``on_yield``, a plain function's result to
    ``on_return``, both on the GUI thread.
    ``on_finished`` runs after success, stop or error alike (enable Start again there).
    Errors reach the user as a notification starting with ``title``.
    """

    def __init__(self, title: str, function: Callable, *args: Any, panel: ProgressPanel,
                 on_yield: Callable | None = None, on_return: Callable | None = None,
                 on_finished: Callable | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.stop_event = threading.Event()
        generator = inspect.isgeneratorfunction(function)
        worker_class = StoppableGeneratorWorker if generator else StoppableFunctionWorker
        self.worker = create_worker(function, *args, _start_thread=False,
                                    _worker_class=worker_class, _ignore_errors=True,
                                    stop=self.stop_event.is_set,
                                    **kwargs)
        self.worker.stop_event = self.stop_event
        self.title, self.panel = title, panel
        self.worker.errored.connect(self._show_error)
        self.running = False  # from start() until the worker's finished signal
        if on_yield is not None and generator:
            self.worker.yielded.connect(on_yield)
        if on_return is not None:
            self.worker.returned.connect(on_return)
        if on_finished is not None:
            self.worker.finished.connect(on_finished)
        panel.stop_button.clicked.connect(self.stop)
        self.worker.finished.connect(self._disconnect_panel)

    def start(self, owner: QWidget, total: int = 0) -> None:
        """Start the worker (``total`` steps expected); closing ``owner``'s dock stops it,
        keeping what it saved."""
        dock = _dock_of(owner)
        if dock is not None:
            dock.destroyed.connect(self.stop_event.set)
        self.panel.begin(total)
        self.running = True
        self.worker.start()

    def stop(self) -> None:
        """Ask the run to end at its next step; training still writes its checkpoint."""
        self.stop_event.set()
        self.panel.rate_label.setText("stopping after this step…")

    def _show_error(self, exc: Exception) -> None:
        """A user's problem (MedGANError) is one plain sentence; anything else is a bug."""
        if not isinstance(exc, MedGANError):
            notification_manager.receive_error(type(exc), exc, exc.__traceback__)
        elif self.stop_event.is_set():  # e.g. an apply stopped mid-volume: nothing was made
            show_info(f"{self.title}: {exc}")
        else:
            show_error(f"{self.title}: {exc}")

    def _disconnect_panel(self) -> None:
        self.running = False
        with contextlib.suppress(RuntimeError):  # the panel is gone when its viewer closed
            self.panel.stop_button.clicked.disconnect(self.stop)
            self.panel.stop_button.setEnabled(False)


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def describe_card(card: dict[str, Any]) -> str:
    """A checkpoint's card in plain words: task, patch, spacing, modality, data, steps."""
    spacing = " × ".join(f"{s:g}" for s in card.get("spacing", []))
    patch = card.get("patch_size", "?")
    data = card.get("data", {})
    files = data.get("files", [])
    names = [Path(f).name for f in files[:3]] + (["…"] if len(files) > 3 else [])
    trained_on = f"{len(files)} volume(s) ({', '.join(names)})" if files else "unknown volumes"
    total = card.get("config", {}).get("train", {}).get("steps", "?")
    return (
        f"{card.get('task', '?')} model · patch {patch}³ voxels of {spacing} mm · "
        f"{card.get('modality', '?')} · trained on {trained_on} · "
        f"step {card.get('step', '?')} of {total}"
    )


class CheckpointPicker(QWidget):
    """A checkpoint folder and its card in plain words (or why it can't be used)."""

    #: the new card, or None when the folder is empty or can't be read
    card_changed = Signal(object)

    def __init__(self, label: str = "Checkpoint", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = FileEdit(mode="d", nullable=True, label=label)
        self.summary = QLabel("no checkpoint chosen")
        self.summary.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.folder.native)
        layout.addWidget(self.summary)
        self.card: dict[str, Any] | None = None
        self.folder.changed.connect(self._read)

    @property
    def path(self) -> Path | None:
        return self.folder.value

    def set_path(self, path: str | Path | None) -> None:
        self.folder.value = path

    def _read(self) -> None:
        self.card = None
        if self.path is None:
            self.summary.setText("no checkpoint chosen")
        else:
            try:
                self.card = api.read_card(self.path)
                self.summary.setText(describe_card(self.card))
            except MedGANError as err:
                self.summary.setText(str(err))
        self.card_changed.emit(self.card)


class DeviceChooser(QComboBox):
    """auto, the CPU, and each CUDA GPU by name and memory (from the core)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        for label, spec in api.device_choices():
            self.addItem(label, spec)

    @property
    def spec(self) -> str:
        return self.currentData()

    def set_spec(self, spec: str) -> None:
        """Select ``spec``; one this machine lacks (a card's ``cuda``) is listed as such, and
        the core refuses it with its reason when the run starts."""
        index = self.findData(spec)
        if index < 0:
            self.addItem(f"{spec} (not found on this machine)", spec)
            index = self.count() - 1
        self.setCurrentIndex(index)


class OutputFolder(QWidget):
    """The checkpoint folder a run writes; an existing checkpoint is replaced only if the
    user says so, any other non-empty folder never."""

    def __init__(self, label: str = "Output folder", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = FileEdit(mode="d", nullable=True, label=label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.folder.native)

    @property
    def path(self) -> Path | None:
        return self.folder.value

    def set_path(self, path: str | Path | None) -> None:
        self.folder.value = path

    def checked(self, *, continuing: Path | None = None,
                inputs: list[str] = ()) -> tuple[Path, bool]:
        """The folder to write and whether to replace it, after asking the user.

        The core's output check decides what may be written (``api.check_output``: never an
        input, a folder of other files, a read-only or full place); only a medgan checkpoint
        is offered for replacing. ``continuing``: the checkpoint being resumed; writing back
        into it needs no question. ``inputs``: the files training reads. Raises
        :class:`OutputError` (with the reason) when there's nothing to write to.
        """
        out = self.path
        if out is None:
            raise OutputExistsError("No output folder chosen; choose where the checkpoint goes.")
        out = Path(out).expanduser()
        if continuing is not None and out.resolve() == Path(continuing).resolve():
            return out, False
        try:
            return api.check_output(out, kind="checkpoint", inputs=inputs), False
        except OutputExistsError:
            api.check_output(out, kind="checkpoint", overwrite=True, inputs=inputs)
        answer = QMessageBox.question(
            self, "Replace the output folder?",
            f"{out} already holds a medgan checkpoint. Replace it with this run?",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if answer != QMessageBox.Yes:
            raise OutputExistsError(
                f"{out} already exists; choose another output folder, or agree to replace it."
            )
        return out, True


def report_error(title: str, err: MedGANError) -> None:
    """A user's problem found on the GUI thread (before a run starts), as one notification."""
    show_error(f"{title}: {err}")


class LayerChooser(QComboBox):
    """The viewer's layers of some types by name, kept current as layers come and go.

    ``optional``: the first entry is "(none)". The list is also refreshed when it opens,
    so renamed layers show their new names.
    """

    NONE = "(none)"

    def __init__(self, viewer: Any, layer_types: tuple[type, ...], *, optional: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.viewer, self.layer_types, self.optional = viewer, layer_types, optional
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, event: Any = None) -> None:
        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, self.layer_types)]
        self.clear()
        self.addItems(([self.NONE] if self.optional else []) + names)
        if current in names:
            self.setCurrentText(current)

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()

    def layer(self) -> Any | None:
        """The chosen layer, or None (nothing chosen, or it was removed meanwhile)."""
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None
