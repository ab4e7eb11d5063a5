"""MedGAN: 3D GANs for CT and MR volumes in 3D Slicer.

Synthesize new 3D patches, apply a translation / cycle / inpainting /
segmentation / anomaly model to a volume node, or train one in the background.
Everything the module does is in ``MedGANLib.logic.MedGANLogic`` (no GUI there);
this file holds what needs the Slicer application: the module description, the
parameter node, the panel, the dependency installation and the in-Slicer test.

The core (``napari_medgan``) and torch are imported only after they are ensured
(on the first button press), so the module loads in a Slicer where they are not
installed yet.
"""

import inspect
import logging
import pathlib
import shutil
import sys
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DEVICES = ["auto", "cpu", "cuda"]
PATCH_SIZES = [8, 16, 32, 64, 128, 256]  # what the core takes: powers of two, 8 to 256


def __getattr__(name: str):
    """``MedGAN.MedGANLogic`` is ``MedGANLib.logic.MedGANLogic``, imported on first use:
    the logic imports the core and torch, which may not be installed when Slicer starts."""
    if name == "MedGANLogic":
        try:
            from MedGANLib.logic import MedGANLogic
        except ImportError as err:  # AttributeError keeps hasattr() working before installation
            raise AttributeError(f"MedGANLogic needs napari-medgan and torch ({err}); press a "
                                 "button of the MedGAN module to install them.") from err
        return MedGANLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#
# MedGAN
#


class MedGAN(ScriptedLoadableModule):
    """The module's description for Slicer's module list."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedGAN"
        self.parent.categories = ["Machine Learning"]
        self.parent.dependencies = []
        self.parent.contributors = ["The napari-medgan developers"]
        self.parent.helpText = (
            "Synthesize 3D patches with a trained GAN, apply translation, cycle, inpainting, "
            "segmentation and anomaly models to volumes, and train models in the background. "
            "Checkpoints are shared with the napari plugin and the medgan command line. "
            'See <a href="https://github.com/napari-medgan/napari-medgan/tree/main/'
            'slicer_extension">the extension\'s README</a>.'
        )
        self.parent.acknowledgementText = (
            "Built on PyTorch, TorchIO and the PyTorch extension's PyTorchUtils."
        )


#
# MedGANParameterNode
#


@parameterNodeWrapper
class MedGANParameterNode:
    """The panel's state, saved with the scene.

    task - what to train (the task of a checkpoint is on its card).
    inputVolume - the volume to apply a model to, and to train on.
    targetVolume - translation / cycle: the paired target or a B-modality volume.
    labelsNode - segmentation: the label map or segmentation of the input; synthesis: optional,
        its labels, so new patches come with label maps.
    maskVolume - inpainting: the region to fill (apply) or the holes (training).
    outputNode - an existing node to overwrite; none: a new node.
    referenceVolume - synthesized patches are centred on it.
    checkpointFolder - the checkpoint to use, or to train into.
    trainingFiles - a folder of volumes to train on.
    """
    # (no "from __future__ import annotations" in this file: the wrapper reads these types)

    task: str = "synthesis"
    inputVolume: vtkMRMLScalarVolumeNode
    targetVolume: vtkMRMLScalarVolumeNode
    labelsNode: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]  # noqa: UP007
    maskVolume: vtkMRMLScalarVolumeNode
    outputNode: Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode]  # noqa: UP007
    referenceVolume: vtkMRMLScalarVolumeNode
    checkpointFolder: pathlib.Path
    trainingFiles: pathlib.Path
    patch: Annotated[int, Choice(PATCH_SIZES)] = 32  # a list: no step lands between
    steps: Annotated[int, WithinRange(1, 1000000)] = 200
    batch: Annotated[int, WithinRange(1, 512)] = 8
    device: Annotated[str, Choice(DEVICES)] = "auto"
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    count: Annotated[int, WithinRange(1, 256)] = 4
    overlap: Annotated[float, WithinRange(0.0, 0.95)] = 0.5
    reverse: bool = False


#
# Dependencies
#


def requirementsFile() -> pathlib.Path:
    return pathlib.Path(__file__).parent / "Resources" / "requirements.txt"


def ensureTorch(device: str) -> bool:
    """torch from the PyTorch extension (never pip-installed here): it picks the CUDA build."""
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay(
            "MedGAN needs the PyTorch extension: install it from the Extensions Manager, "
            "restart Slicer, and try again.")
        return False
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        if torchLogic.installTorch(askConfirmation=True) is None:
            slicer.util.errorDisplay(
                "MedGAN needs PyTorch, which was not installed. Install it with the PyTorch "
                "module (Utilities → PyTorch Utils), then try again.")
            return False
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        slicer.util.errorDisplay(
            f"The device '{device}' was chosen, but this PyTorch ({torch.__version__}) sees no "
            "CUDA GPU. Choose 'cpu' or 'auto', or reinstall PyTorch with CUDA in the PyTorch "
            "Utils module (it picks the build that fits the GPU driver).")
        return False
    return True


def ensureCore() -> bool:
    """napari-medgan (without torch, which ensureTorch provides) after the user agrees."""
    try:
        import psutil  # noqa: F401

        import napari_medgan.core.api  # noqa: F401

        return True
    except ImportError:
        pass
    lines = [line.strip() for line in requirementsFile().read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    pydeps = getattr(slicer, "pydeps", None)
    if pydeps is not None and hasattr(pydeps, "pip_ensure"):  # Slicer >= 5.12: asks, installs
        pydeps.pip_ensure(pydeps.load_requirements(str(requirementsFile())),
                          skip_packages=["torch"], requester="MedGAN")
    else:
        if not slicer.util.confirmOkCancelDisplay(
                "MedGAN needs these Python packages in Slicer's Python:\n\n"
                + "\n".join(lines)
                + "\n\nPyTorch itself comes from the PyTorch extension. Install them now?",
                "MedGAN: install dependencies"):
            return False
        with slicer.util.WaitCursor():
            slicer.util.pip_install(lines)
    try:
        import napari_medgan.core.api  # noqa: F401,F811

        return True
    except ImportError as err:
        slicer.util.errorDisplay(f"MedGAN's packages could not be loaded: {err}")
        return False


def launchConsoleRunner(args, on_line, on_exit):
    """Slicer >= 5.12: launchConsoleProcess reads the output in a thread and calls back on
    the main thread (see MedGANLib.process)."""
    return slicer.util.launchConsoleProcess(list(args), blocking=False, logCallback=on_line,
                                            completedCallback=on_exit)


def slicerPython() -> str:
    """PythonSlicer runs a script with Slicer's Python packages (the ones ensureCore installed)."""
    return shutil.which("PythonSlicer") or sys.executable


def hasAsyncLaunch() -> bool:
    return "completedCallback" in inspect.signature(slicer.util.launchConsoleProcess).parameters


#
# MedGANWidget
#


class MedGANWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: buttons call the logic; the parameter node holds the state."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._pollTimer = None
        self._previewShown = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedGAN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.synthesizeButton.connect("clicked(bool)", self.onSynthesizeButton)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.taskComboBox.connect("currentTextChanged(QString)", self.onTaskChanged)
        self.ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.updateCardLabel)
        self.fillTasks()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Slicer closes: no training process is left behind."""
        if self._run is not None:
            self._run.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self.updateTaskFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(MedGANParameterNode(self.getParameterNode()))

    def getParameterNode(self):
        return slicer.mrmlScene.GetSingletonNode("MedGAN", "vtkMRMLScriptedModuleNode") or \
            slicer.mrmlScene.AddNode(self._newParameterNode())

    @staticmethod
    def _newParameterNode():
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag("MedGAN")
        node.SetName("MedGAN")
        node.SetModuleName("MedGAN")
        return node

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self.updateTaskFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # the task list comes from the core: kept in step by hand; the rest by connectGui
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                             self.updateTaskFromParameterNode)
            self.updateTaskFromParameterNode()

    def fillTasks(self) -> None:
        """The tasks the installed core registers (none named here); just the saved one before."""
        try:
            from napari_medgan.core.api import available_tasks

            tasks = available_tasks()
        except ImportError:
            tasks = ["synthesis"]
        combo = self.ui.taskComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItems(tasks)
        combo.blockSignals(wasBlocked)

    def updateTaskFromParameterNode(self, caller=None, event=None) -> None:
        if self._parameterNode and self.ui.taskComboBox.currentText != self._parameterNode.task:
            if self.ui.taskComboBox.findText(self._parameterNode.task) < 0:
                self.ui.taskComboBox.addItem(self._parameterNode.task)
            self.ui.taskComboBox.setCurrentText(self._parameterNode.task)

    def onTaskChanged(self, text: str) -> None:
        if self._parameterNode and text and self._parameterNode.task != text:
            self._parameterNode.task = text

    def updateCardLabel(self, path: str = "") -> None:
        """What the chosen checkpoint holds: task, patch, spacing, steps."""
        try:
            from napari_medgan.core.api import read_card
            from napari_medgan.core.errors import MedGANError
        except ImportError:
            self.ui.cardLabel.text = "(MedGAN's packages are installed on first use)"
            return
        if not pathlib.Path(path).is_dir():
            self.ui.cardLabel.text = "no checkpoint yet: training writes one here"
            return
        try:
            card = read_card(path)
        except MedGANError as err:
            self.ui.cardLabel.text = str(err)
            return
        spacing = " × ".join(f"{s:g}" for s in card["spacing"])
        self.ui.cardLabel.text = (f"{card['task']}, patch {card['patch_size']}³ at {spacing} mm, "
                                  f"{card['step']} steps, {card.get('modality', '')}")

    def getLogic(self):
        """The logic, once torch and the core are there (installing them if the user agrees)."""
        device = self._parameterNode.device if self._parameterNode else "auto"
        if not (ensureTorch(device) and ensureCore()):
            return None
        if self.logic is None:
            from MedGANLib.logic import MedGANLogic

            self.logic = MedGANLogic(python=slicerPython())
            self.fillTasks()
            self.updateTaskFromParameterNode()
        return self.logic

    def checkpoint(self) -> str:
        folder = self._parameterNode.checkpointFolder
        if not str(folder) or str(folder) == ".":
            raise ValueError("Choose a checkpoint folder first.")
        return str(folder)

    def onSynthesizeButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Synthesis failed.", waitCursor=True):
            logic = self.getLogic()
            if logic is None:
                return
            p = self._parameterNode
            centre = None
            if p.referenceVolume is not None:
                bounds = [0.0] * 6
                p.referenceVolume.GetRASBounds(bounds)
                centre = [(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)]
            nodes = logic.synthesize(self.checkpoint(), p.count, p.seed, centre, device=p.device)
            slicer.util.setSliceViewerLayers(background=nodes[0], fit=True)

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Applying the model failed.", waitCursor=True):
            logic = self.getLogic()
            if logic is None:
                return
            p = self._parameterNode
            result = logic.apply(self.checkpoint(), p.inputVolume, p.maskVolume, p.reverse,
                                 output_node=p.outputNode, overlap=p.overlap, device=p.device)
            if result.IsA("vtkMRMLSegmentationNode"):
                slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
            else:
                slicer.util.setSliceViewerLayers(background=result, foreground=p.inputVolume,
                                                 foregroundOpacity=0.0, fit=True)
            score = result.GetAttribute("MedGAN.anomaly_score")
            if score is not None:
                slicer.util.showStatusMessage(
                    f"Anomaly score of {p.inputVolume.GetName()}: {score}")

    def onTrainButton(self) -> None:
        if self._run is not None and not self._run.progress.finished:
            self._run.cancel()
            self.ui.trainButton.text = "Stopping…"
            self.ui.trainButton.enabled = False
            return
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            logic = self.getLogic()
            if logic is None:
                return
            p = self._parameterNode
            data = [node for node in (p.inputVolume,) if node is not None]
            if str(p.trainingFiles) not in ("", "."):
                data.append(str(p.trainingFiles))
            resume = self.askResume(self.checkpoint(), p.steps)
            if resume is False:
                return
            if hasAsyncLaunch():
                runner = launchConsoleRunner
            else:  # Slicer < 5.12: a reader thread, polled by a timer on the main thread
                from MedGANLib.process import QueueRunner

                runner = QueueRunner()
            self.ui.trainLogTextEdit.clear()
            self._previewShown = False
            self._run = logic.train(
                self.checkpoint(), runner=runner, task=p.task, data=data,
                targets=[n for n in (p.targetVolume,) if n is not None],
                labels=[n for n in (p.labelsNode,) if n is not None],
                masks=[n for n in (p.maskVolume,) if n is not None],
                patch=p.patch, steps=p.steps, batch=p.batch, device=p.device, seed=p.seed,
                resume=resume, on_update=self.onTrainingUpdate)
            if not hasAsyncLaunch():
                self._pollTimer = qt.QTimer()
                self._pollTimer.setInterval(100)
                self._pollTimer.connect("timeout()", runner.poll)
                self._pollTimer.start()
            self.ui.trainButton.text = "Cancel"
            self.ui.trainStatusLabel.text = "Starting the training process…"

    @staticmethod
    def askResume(folder: str, steps: int):
        """None: a new run; the folder: resume it (the user agreed); False: the user declined."""
        if not pathlib.Path(folder).exists():
            return None
        from napari_medgan.core.api import read_card

        card = read_card(folder)  # a folder that is no checkpoint: its error is shown
        if slicer.util.confirmYesNoDisplay(
                f"{folder} holds a {card['task']} checkpoint at step {card['step']}. Continue "
                f"training it up to step {steps}? (Its settings are kept; a new run needs "
                "another folder.)", windowTitle="MedGAN: resume training"):
            return folder
        return False

    def onTrainingUpdate(self, progress, event) -> None:
        """Called on the main thread for each event of the run, and once at its end."""
        self.ui.trainProgressBar.maximum = max(progress.total, 1)
        self.ui.trainProgressBar.value = progress.step
        if event is not None:
            preview = self._run.preview_node if self._run is not None else None
            if preview is not None and not self._previewShown:  # once: the user may look away
                slicer.util.setSliceViewerLayers(background=preview, fit=True)
                self._previewShown = True
            losses = ", ".join(f"{k} {v:.3f}" for k, v in progress.losses.items())
            self.ui.trainStatusLabel.text = (
                f"Step {progress.step} / {progress.total} · {progress.steps_per_s:.2f} steps/s · "
                f"ETA {progress.eta_s / 60:.1f} min\n{losses}")
            return
        if self._pollTimer is not None:
            self._pollTimer.stop()
            self._pollTimer = None
        self.ui.trainButton.text = "Train"
        self.ui.trainButton.enabled = True
        self.ui.trainStatusLabel.text = progress.message.splitlines()[0]
        self.ui.trainLogTextEdit.setPlainText(progress.message)
        (logging.error if progress.status == "failed" else logging.info)(progress.message)
        if progress.status == "failed":
            slicer.util.errorDisplay(progress.message, windowTitle="MedGAN training")
        self.updateCardLabel(str(self._parameterNode.checkpointFolder))


#
# MedGANTest
#


class MedGANTest(ScriptedLoadableModuleTest):
    """The logic inside a real Slicer, on a crop of the CTChest sample: train tiny models in
    the background, synthesize, apply with a mask, cancel a run. The same checks run without
    the application in the project's tests/slicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MedGAN_on_sample_CT()

    def test_MedGAN_on_sample_CT(self):
        import tempfile

        import numpy as np
        import SampleData
        from MedGANLib.process import QueueRunner

        from napari_medgan.core import api

        logic = self._logic()
        ct = SampleData.downloadSample("CTChest")
        crop = self._crop(ct, 48)
        folder = pathlib.Path(tempfile.mkdtemp(prefix="MedGANTest-"))
        config = api.Config()
        config.model.latent_dim, config.model.g_channels, config.model.d_channels = 8, 4, 4
        config.model.max_channels, config.model.unet_channels = 16, (4, 8)
        config.model.patchgan_channels = 4
        config.train.preview_every = config.train.checkpoint_every = 2
        api.save_config(config, folder / "tiny.yaml")

        runner = QueueRunner()
        for task in ("synthesis", "inpainting"):
            run = logic.train(str(folder / task), runner=runner, task=task, data=[crop],
                              patch=16, steps=4, batch=2, device="cpu",
                              config_file=str(folder / "tiny.yaml"))
            self._wait(run, runner, lambda r: False)
            self.assertEqual(run.progress.status, "done", run.progress.message)
            self.assertIsNotNone(run.preview_node)

        nodes = logic.synthesize(str(folder / "synthesis"), 4, seed=1)
        self.assertEqual(len(nodes), 4)
        for node in nodes:
            np.testing.assert_allclose(node.GetSpacing(), crop.GetSpacing(), atol=1e-6)

        mask = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "hole")
        holes = np.zeros(slicer.util.arrayFromVolume(crop).shape, np.uint8)
        holes[16:32, 16:32, 16:32] = 1
        slicer.util.updateVolumeFromArray(mask, holes)
        mask.CopyOrientation(crop)
        before = slicer.util.arrayFromVolume(crop).copy()
        result = logic.apply(str(folder / "inpainting"), crop, mask)
        matrices = [vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()]
        crop.GetIJKToRASMatrix(matrices[0])
        result.GetIJKToRASMatrix(matrices[1])
        np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrices[1]),
                                   slicer.util.arrayFromVTKMatrix(matrices[0]), atol=1e-6)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(crop), before)
        outside = holes == 0
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(result)[outside],
                                      before[outside])

        run = logic.train(str(folder / "cancelled"), runner=runner, data=[crop], patch=16,
                          steps=100000, batch=2, device="cpu",
                          config_file=str(folder / "tiny.yaml"))
        self._wait(run, runner, lambda r: r.progress.step >= 2)
        run.cancel()
        self._wait(run, runner, lambda r: False)
        self.assertEqual(run.progress.status, "stopped", run.progress.message)
        self.assertTrue((folder / "cancelled" / "card.json").is_file())
        self.delayDisplay("MedGAN test passed")

    @staticmethod
    def _logic():
        from MedGANLib.logic import MedGANLogic

        return MedGANLogic(python=slicerPython())

    @staticmethod
    def _crop(volume, size):
        """A ``size``³ crop from the middle of ``volume``, in place in the world."""
        import numpy as np

        array = slicer.util.arrayFromVolume(volume)
        start = [(n - size) // 2 for n in array.shape]  # k, j, i
        crop = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CTChest crop")
        slicer.util.updateVolumeFromArray(
            crop, np.ascontiguousarray(array[tuple(slice(s, s + size) for s in start)]))
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        ijkToRas = slicer.util.arrayFromVTKMatrix(matrix)
        ijkToRas[:3, 3] += ijkToRas[:3, :3] @ start[::-1]
        crop.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRas))
        return crop

    @staticmethod
    def _wait(run, runner, until, timeout=600):
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not run.progress.finished and not until(run):
            runner.poll()
            slicer.app.processEvents()
            time.sleep(0.05)
