"""The Synthesize dock widget: new 3D patches from a trained synthesis model.

Pick a checkpoint (its card is shown in plain words), a number of patches and a seed:
the patches appear as Image layers named after the checkpoint and seed, with the
training data's voxel spacing and intensity units, side by side in the current view.
A model trained with label maps adds each patch's label map as a Labels layer on the
patch's grid.
**Check quality** compares synthetic with held-out real patches (layers or files) in a
worker and explains each number, the memorisation flag first.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import FileEdit
from napari.layers import Image, Layer
from qtpy.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSpinBox,
)

from napari_medgan.core import api
from napari_medgan.core.errors import DataError, MedGANError

from .common import LayerChooser, report_error
from .convert import layer_to_volume, placed_in_a_row, volume_to_layer_data
from .model_widget import ModelWidget

_UNITS = {"ct": "HU", "mr": "MR signal (arbitrary units)"}
_LAYER_PREFIX = "layer:"


def make_patches(checkpoint: Path, n: int, seed: int, device: str, *,
                 stop) -> list[tuple[api.Volume, api.Volume | None]]:
    """In the worker: ``n`` (patch, label map or None) pairs, or none if Cancel came while
    the model loaded."""
    model = api.load_model(checkpoint, device=device)
    if stop():
        return []
    if model.generates_labels:
        return api.synthesize_pairs(model, n=n, seed=seed)
    return [(volume, None) for volume in api.synthesize(model, n=n, seed=seed)]


def evaluate_model(checkpoint: Path, held_out: list, training: list | None, n: int, seed: int,
                  device: str, *, stop) -> dict[str, Any]:
    """In the worker: :func:`api.evaluate` of the model on the held-out volumes."""
    model = api.load_model(checkpoint, device=device)
    return api.evaluate(model, held_out, n=n, seed=seed, training=training)


def describe_quality(report: dict[str, Any]) -> str:
    """The evaluation in plain words: one line per number on what it means."""
    lines = [
        f"Realism: a classifier tells synthetic from real held-out patches with ROC AUC "
        f"{report['c2st_auc_vs_held_out']:.2f}, two real sets with "
        f"{report['c2st_auc_real_vs_real']:.2f} (0.5 = indistinguishable, 1 = always told "
        "apart; near the real-vs-real value means realistic)."]
    if report.get("c2st_auc_vs_training") is not None:
        lines.append(f"Against real patches of the training region: AUC "
                     f"{report['c2st_auc_vs_training']:.2f}.")
    close = report.get("memorisation_fraction_suspiciously_close")
    if close is None:
        lines.append("Memorisation: not checked (" + "; ".join(report.get("notes", [])) + ").")
    else:
        verdict = ("POSSIBLE MEMORISATION: the model may be copying its training data"
                   if report["memorisation_suspicious"] else
                   "no sign of copying the training data")
        lines.append(
            f"Memorisation: {verdict}. {close:.0%} of synthetic patches are closer to a "
            "training patch than 95 % of real held-out patches get (about 5 % is normal, "
            f"above {report['memorisation_suspicious_above']:.0%} suspicious); new real "
            f"patches of the training region: {report['memorisation_training_region_share']:.0%}"
            " (higher than 5 % when the held-out data differ from the training region: a "
            "share up to this level is what sampling the training data gives).")
        lines.append(
            f"Nearest-training distance ratio: {report['memorisation_nn_distance_ratio']:.3g} "
            "(synthetic / real; well below 1 also hints at copying).")
    lines.append(
        f"MMD synthetic vs held-out: {report['mmd_synthetic_vs_held_out']:.3g}, against "
        f"{report['mmd_held_out_halves']:.3g} between two halves of the real patches (how far "
        "apart real sets are by chance; close to it means realistic).")
    lines.append(
        f"MS-SSIM diversity: {report['ms_ssim_diversity_synthetic']:.3g} synthetic vs "
        f"{report['ms_ssim_diversity_held_out']:.3g} real (lower is more varied; clearly "
        "higher than real means mode collapse: the same patch again and again).")
    lines.append(f"From {report['n_synthetic']} synthetic and {report['n_held_out']} held-out "
                 "patches.")
    return "\n".join(lines)


class SynthesizeWidget(ModelWidget):
    """Generate patches with a synthesis checkpoint and judge how good they are."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.count = QSpinBox()
        self.count.setRange(1, 64)
        self.count.setValue(4)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.generate_button = QPushButton("Generate")
        self.held_out_layer = LayerChooser(self.viewer, (Image,), optional=True)
        self.held_out_files = FileEdit(mode="rm", label="Held-out files")
        self.patches = QSpinBox()
        self.patches.setRange(8, 1024)
        self.patches.setValue(64)
        self.patches.setToolTip("Synthetic and real patches compared; more is steadier and "
                                "slower.")
        self.quality_button = QPushButton("Check quality")
        self.quality = QLabel("")
        self.quality.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Patches", self.count)
        form.addRow("Seed", self.seed)
        form.addRow("Device", self.device)
        quality = QGroupBox("Quality")
        quality_form = QFormLayout(quality)
        quality_form.addRow("Held-out layer", self.held_out_layer)
        quality_form.addRow("or files", self.held_out_files.native)
        quality_form.addRow("Patches compared", self.patches)
        quality_form.addRow(self.quality_button)
        quality_form.addRow(self.quality)
        self.column.addLayout(form)
        self.column.addWidget(self.generate_button)
        self.column.addWidget(self.panel)
        self.column.addWidget(quality)
        self.column.addStretch(1)

        self.generate_button.clicked.connect(self.generate)
        self.quality_button.clicked.connect(self.check_quality)
        self.show_card(None)

    @property
    def _usable(self) -> bool:
        card = self.checkpoint.card
        try:
            return card is not None and api.task_use(card["task"]).synthesizes
        except MedGANError:
            return False

    def show_card(self, card: dict[str, Any] | None) -> None:
        hint = ""
        if card is not None and not self._usable:
            hint = (f"This is a {card['task']} model: it maps volumes instead of making new "
                    "ones. Use the Apply widget.")
        elif card is not None:
            units = _UNITS.get(card.get("modality", ""), "the training data's units")
            hint = f"Patches come in {units}, at the training data's voxel spacing."
            if card.get("generates_labels"):
                classes = ", ".join(f"{name} = {value}" for name, value in
                                    zip(card["class_names"], card["label_values"], strict=True))
                hint += f" Each comes with its label map ({classes})."
        self.hint.setText(hint)
        self.set_idle(True)

    def set_idle(self, idle: bool) -> None:
        self.generate_button.setEnabled(idle and self._usable)
        self.quality_button.setEnabled(idle and self._usable)

    def generate(self) -> None:
        """Make the patches in a worker; they're added as layers when it returns."""
        if not self._usable:
            report_error("Synthesize", DataError("Choose the folder of a synthesis checkpoint."))
            return
        checkpoint, seed = Path(self.checkpoint.path), self.seed.value()
        units = _UNITS.get(self.checkpoint.card.get("modality", ""), "")
        self.run("Synthesize", make_patches, checkpoint, self.count.value(), seed,
                 self.device.spec, on_return=partial(self._add_patches, checkpoint, seed, units))

    def check_quality(self) -> None:
        """Evaluate the model on the chosen held-out layer and files, in a worker."""
        try:
            held_out = self._held_out()
            training = self._training_layers()
        except MedGANError as err:
            report_error("Check quality", err)
            return
        self.quality.setText("")
        self.run("Check quality", evaluate_model, Path(self.checkpoint.path), held_out,
                 training, self.patches.value(), self.seed.value(), self.device.spec,
                 on_return=self._show_quality)

    def _show_quality(self, report: dict[str, Any]) -> None:
        self.quality.setText(describe_quality(report))
        self.done(f"compared {report['n_synthetic']} synthetic with {report['n_held_out']} "
                  "real patches")

    def _held_out(self) -> list:
        if not self._usable:
            raise DataError("Choose the folder of a synthesis checkpoint first.")
        layer = self.held_out_layer.layer()
        chosen: list = [layer_to_volume(layer)] if layer is not None else []
        chosen += [Path(f) for f in self.held_out_files.value or () if str(f) not in ("", ".")]
        if not chosen:
            raise DataError("Choose a held-out layer or files: real volumes the model did not "
                            "learn from.")
        return chosen

    def _training_layers(self) -> list | None:
        """Open layers the model was trained on (the card names them ``layer:<name>``)."""
        files = (self.checkpoint.card or {}).get("data", {}).get("files", [])
        names = [f[len(_LAYER_PREFIX):] for f in files if f.startswith(_LAYER_PREFIX)]
        layers = [self.viewer.layers[n] for n in names if n in self.viewer.layers]
        return [layer_to_volume(layer) for layer in layers] or None

    def _add_patches(self, checkpoint: Path, seed: int, units: str,
                     pairs: list[tuple[api.Volume, api.Volume | None]]) -> None:
        if not pairs:
            self.panel.end("cancelled: nothing was added")
            return
        dims = self.viewer.dims
        in_view = dims.ndim == 3
        placed = placed_in_a_row([image for image, _ in pairs],
                                 axis=dims.displayed[-1] if in_view else 2,
                                 centre=dims.point if in_view else None)
        metadata = {"checkpoint": str(checkpoint), "seed": seed}
        for index, (volume, (_, labels)) in enumerate(zip(placed, pairs, strict=True)):
            name = f"{checkpoint.name} seed {seed} #{index}"
            data, kwargs, kind = volume_to_layer_data(
                volume, name=name, metadata={**metadata, "intensity_units": units})
            self.viewer.add_layer(Layer.create(data, kwargs, kind))
            if labels is not None:  # on its patch's grid, wherever the patch was placed
                on_patch = api.Volume(labels.tensor, volume.affine, labels.name)
                data, kwargs, kind = volume_to_layer_data(
                    on_patch, layer_type="labels", name=f"{name} labels", metadata=metadata)
                self.viewer.add_layer(Layer.create(data, kwargs, kind))
        with_labels = " with label maps" if pairs[0][1] is not None else ""
        self.done(f"added {len(placed)} patch(es){with_labels} in {units or 'the data units'}")
