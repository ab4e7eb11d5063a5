"""What the Synthesize and Apply widgets share: a dock widget that runs a trained model.

A checkpoint picker with a line of advice under it, one run at a time in a napari
worker with a progress bar and Cancel, and a signal when a run has ended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from .common import CheckpointPicker, Job, ProgressPanel


class ModelWidget(QWidget):
    """Base of the widgets that use a checkpoint; subclasses add their own controls."""

    #: a run ended (its result shown, cancelled or failed) and the buttons are enabled again
    run_finished = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.checkpoint = CheckpointPicker()
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.panel = ProgressPanel("Cancel")
        self.job: Job | None = None
        self.column = QVBoxLayout(self)
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
            **kwargs: Any) -> None:
        """Run ``function(*args, stop=..., **kwargs)`` in a worker; its result to ``on_return``."""
        self.set_idle(False)
        self.job = Job(title, function, *args, panel=self.panel, on_return=on_return,
                       on_finished=self._finished, **kwargs)
        self.job.start(self)

    def _finished(self) -> None:
        self.set_idle(True)
        self.run_finished.emit()
