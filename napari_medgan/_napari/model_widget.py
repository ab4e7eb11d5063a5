"""What the Synthesize and Apply widgets share: a dock widget that runs a trained model.

A checkpoint picker with a line of advice under it, one run at a time in a napari
worker with a progress bar and Cancel, and a signal when a run has ended. The controls
sit in a scroll area, so long reports are not cut off in a small dock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QLabel, QScrollArea, QVBoxLayout, QWidget

from .common import CheckpointPicker, DeviceChooser, Job, ProgressPanel


class ModelWidget(QWidget):
    """Base of the widgets that use a checkpoint; subclasses add their own controls.

    ``device`` is the device chooser; subclasses place it among their controls.
    """

    #: a run ended (its result shown, cancelled or failed) and the buttons are enabled again
    run_finished = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.checkpoint = CheckpointPicker()
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.device = DeviceChooser()
        self.device.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.panel = ProgressPanel("Cancel")
        self.job: Job | None = None
        content = QWidget()
        self.column = QVBoxLayout(content)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # wrap and narrow instead
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.column.addWidget(self.checkpoint)
        self.column.addWidget(self.hint)
        self.checkpoint.card_changed.connect(self.show_card)

    def show_card(self, card: dict[str, Any] | None) -> None:
        """Say what the chosen model is good for here; enable what it can do."""
        raise NotImplementedError

    def set_idle(self, idle: bool) -> None:
        """Enable the run buttons when nothing runs and the model can be used."""
        raise NotImplementedError

    def run(self, title: str, function: Callable, *args: Any, on_return: Callable,
            counted: bool = False, **kwargs: Any) -> None:
        """Run ``function(*args, stop=..., **kwargs)`` in a worker; its result to ``on_return``.

        ``counted``: the function reports progress to ``self.panel.reported``; otherwise
        the bar just shows that something is running.
        """
        self.set_idle(False)
        self.job = Job(title, function, *args, panel=self.panel, on_return=on_return,
                       on_finished=self._finished, **kwargs)
        self.job.start(self)
        if not counted:
            self.panel.bar.setRange(0, 0)  # busy

    def done(self, text: str) -> None:
        """Show a run's success under the full bar."""
        self.panel.bar.setRange(0, 1)
        self.panel.bar.setValue(1)
        self.panel.end(text)

    def _finished(self) -> None:
        if self.panel.bar.maximum() == 0:  # a busy bar of a run that failed or was cancelled
            self.panel.bar.setRange(0, 1)
            self.panel.bar.setValue(0)
        self.set_idle(True)
        self.run_finished.emit()
