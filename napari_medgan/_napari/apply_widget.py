"""The Apply dock widget: run a trained model over a whole open volume.

Checkpoint + input layer (+ the mask of the holes for inpainting; a direction for cycle
models) → a new layer on the input's exact geometry: an Image for translation, cycle
and inpainting, Labels for segmentation, and for anomaly detection a coloured map
blended over the input with the volume's score shown here. The sliding window runs in a
napari worker with a progress bar and Cancel; the input layers are never changed.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import napari
from napari.layers import Image, Labels, Layer
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
)

from napari_medgan.core import api
from napari_medgan.core.errors import DataError, MedGANError

from .common import LayerChooser, report_error
from .convert import layer_to_volume, volume_to_layer_data
from .model_widget import ModelWidget

#: How each kind of output is shown: layer type and display settings.
_OUTPUT_LAYERS = {
    "intensity": ("image", {}),
    "labels": ("labels", {}),
    "map": ("image", {"colormap": "inferno", "blending": "additive", "opacity": 0.7}),
}


def run_model(checkpoint: Path, volume: api.Volume, *, mask: api.Volume | None, reverse: bool,
              overlap: float, batch_size: int, device: str, progress, stop
              ) -> tuple[api.Volume, float | None]:
    """In the worker: the model's output for ``volume``, and an anomaly map's volume score."""
    model = api.load_model(checkpoint, device=device)
    result = api.apply(model, volume, mask=mask, overlap=overlap, batch_size=batch_size,
                       progress=progress, stop=stop, reverse=reverse)
    is_map = api.task_use(model.task_name).output == "map"
    return result, api.anomaly_score(result) if is_map else None


class ApplyWidget(ModelWidget):
    """Apply a translation, cycle, inpainting, segmentation or anomaly model to a layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.input = LayerChooser(self.viewer, (Image,))
        self.mask = LayerChooser(self.viewer, (Labels, Image), optional=True)
        self.mask_label = QLabel("Holes to fill")
        self.reverse = QCheckBox("Reverse: map the B modality back to A")
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.9)
        self.overlap.setSingleStep(0.125)
        self.overlap.setValue(0.5)
        self.overlap.setToolTip("Share of each patch overlapping its neighbours: more is "
                                "smoother and slower.")
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(4)
        self.batch.setToolTip("Patches per forward pass: lower it if the device runs out of "
                              "memory.")
        self.run_button = QPushButton("Apply")
        self.score = QLabel("")
        self.score.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Input", self.input)
        form.addRow(self.mask_label, self.mask)
        form.addRow(self.reverse)
        form.addRow("Overlap", self.overlap)
        form.addRow("Batch", self.batch)
        form.addRow("Device", self.device)
        self.column.addLayout(form)
        self.column.addWidget(self.run_button)
        self.column.addWidget(self.panel)
        self.column.addWidget(self.score)
        self.column.addStretch(1)

        self._use: api.TaskUse | None = None
        self.run_button.clicked.connect(self.start)
        self.show_card(None)

    def show_card(self, card: dict[str, Any] | None) -> None:
        """Offer only what this model needs; say which widget a model of another kind needs."""
        self._use, hint = None, ""
        if card is not None:
            try:
                self._use = api.task_use(card["task"])
            except MedGANError as err:
                hint = str(err)
        if self._use is not None and not self._use.applies:
            hint = (f"This is a {card['task']} model: it makes new patches instead of mapping a "
                    "volume. Use the Synthesize widget.")
        self.hint.setText(hint)
        use = self._use
        needs_mask = use is not None and "mask" in use.apply_inputs
        self.mask.setVisible(needs_mask)
        self.mask_label.setVisible(needs_mask)
        self.reverse.setVisible(use is not None and use.reversible)
        self.set_idle(True)

    def set_idle(self, idle: bool) -> None:
        self.run_button.setEnabled(idle and self._use is not None and self._use.applies)

    def start(self) -> None:
        """Check the choices on the GUI thread, then run the model in a worker."""
        try:
            checkpoint, volume, mask = self._inputs()
        except MedGANError as err:
            report_error("Apply", err)
            return
        input_name, reverse = self.input.layer().name, self._reverse()
        task = (self.checkpoint.card or {}).get("task", "result")
        name = f"{input_name} {task}{' reverse' if reverse else ''}"
        self.score.setText("")
        self.run("Apply", run_model, checkpoint, volume, mask=mask, reverse=reverse,
                 overlap=self.overlap.value(), batch_size=self.batch.value(),
                 device=self.device.spec, progress=self.panel.reported.emit, counted=True,
                 on_return=partial(self._add_result, input_name, name, self._use.output,
                                   checkpoint))

    def _reverse(self) -> bool:
        return self._use is not None and self._use.reversible and self.reverse.isChecked()

    def _inputs(self) -> tuple[Path, api.Volume, api.Volume | None]:
        if self._use is None or self.checkpoint.path is None:
            raise DataError("Choose a checkpoint folder of a trained model first.")
        layer = self.input.layer()
        if layer is None:
            raise DataError("Choose the input layer to apply the model to.")
        mask = None
        if "mask" in self._use.apply_inputs:
            mask_layer = self.mask.layer()
            if mask_layer is None:
                raise DataError("An inpainting model needs the holes to fill: choose a mask "
                                "layer (non-zero voxels are filled).")
            mask = layer_to_volume(mask_layer)
        return Path(self.checkpoint.path), layer_to_volume(layer), mask

    def _add_result(self, input_name: str, name: str, output: str, checkpoint: Path,
                    result: tuple[api.Volume, float | None]) -> None:
        """The run's output as a new layer (what was chosen at Apply, whatever changed since)."""
        volume, score = result
        layer_type, style = _OUTPUT_LAYERS[output]
        data, kwargs, layer_type = volume_to_layer_data(volume, layer_type=layer_type, name=name,
                                                        **style)
        kwargs["metadata"]["checkpoint"] = str(checkpoint)
        self.viewer.add_layer(Layer.create(data, kwargs, layer_type))
        self.done(f"added layer {name!r}")
        if score is not None:
            self.score.setText(
                f"Anomaly score of {input_name}: {score:.4g} (mean of the brightest 1 % of the "
                "map; compare it with the scores of normal volumes: clearly higher means "
                "something the model has not seen in normal data).")
