"""Render MedGAN.ui to docs/MedGAN_ui.png without Slicer (PyQt5 under a virtual X server).

Slicer's own widgets (ctk, qMRML) don't exist in plain PyQt5, so each is drawn as the
Qt widget it extends: a collapsible button as a group box, a path line edit as a line
edit, a node selector as a combo box showing the node a user would pick after loading
the CTChest sample. Run: ``Xvfb :99 & DISPLAY=:99 python slicer_extension/docs/render_ui.py``.
"""

from __future__ import annotations

import io
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from PyQt5 import QtWidgets, uic

HERE = Path(__file__).resolve().parent
UI_FILE = HERE.parent / "MedGAN" / "Resources" / "UI" / "MedGAN.ui"
STAND_INS = {"ctkCollapsibleButton": "QGroupBox", "ctkPathLineEdit": "QLineEdit",
             "qMRMLNodeComboBox": "QComboBox", "qMRMLWidget": "QWidget"}
SLICER_ONLY = {"collapsed", "nodeTypes", "showChildNodeTypes", "noneEnabled", "addEnabled",
               "removeEnabled", "renameEnabled", "noneDisplay", "filters"}
# what the panel shows after: load CTChest, pick a checkpoint, train a while
SHOWN = {
    "checkpointPathLineEdit": "/data/medgan/ct-synthesis",
    "cardLabel": "synthesis, patch 32³ at 0.74 × 0.74 × 2.5 mm, 100 steps, ct",
    "referenceSelector": "CTChest", "inputSelector": "CTChest", "maskSelector": "None",
    "outputSelector": "Create new", "targetSelector": "None", "labelsSelector": "None",
    "trainingFilesPathLineEdit": "",
    "trainStatusLabel": "Step 120 / 200 · 6.84 steps/s · ETA 0.2 min\nloss_d 1.284, loss_g 0.913",
}


def plain_qt_ui(path: Path) -> str:
    """The .ui with Slicer's widgets replaced by the Qt widgets they extend."""
    tree = ET.parse(path)
    root = tree.getroot()
    for widget in root.iter("widget"):
        cls = widget.get("class")
        if cls in STAND_INS:
            widget.set("class", STAND_INS[cls])
        for prop in list(widget.findall("property")):
            if prop.get("name") in SLICER_ONLY or prop.get("stdset") == "0":
                widget.remove(prop)
            elif cls == "ctkCollapsibleButton" and prop.get("name") == "text":
                prop.set("name", "title")
    for tag in ("customwidgets", "connections"):
        for element in root.findall(tag):
            root.remove(element)
    return ET.tostring(root, encoding="unicode")


def render(out: Path) -> Path:
    from napari_medgan.core.api import available_tasks

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv)
    panel = uic.loadUi(io.StringIO(plain_qt_ui(UI_FILE)))
    panel.setWindowTitle("MedGAN")
    for name, text in SHOWN.items():
        widget = getattr(panel, name)
        if isinstance(widget, QtWidgets.QComboBox):
            widget.addItem(text)
        else:
            widget.setText(text)
    panel.deviceComboBox.addItems(["auto", "cpu", "cuda"])
    panel.taskComboBox.addItems(available_tasks())
    panel.taskComboBox.setCurrentText("synthesis")
    panel.countSpinBox.setValue(4)
    panel.overlapSpinBox.setValue(0.5)
    panel.patchSpinBox.setValue(32)
    panel.stepsSpinBox.setValue(200)
    panel.batchSpinBox.setValue(8)
    panel.trainButton.setText("Cancel")
    panel.trainProgressBar.setMaximum(200)
    panel.trainProgressBar.setValue(120)
    panel.resize(420, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    panel.grab().save(str(out))
    return out


if __name__ == "__main__":
    print(render(HERE / "MedGAN_ui.png"))
