"""The Slicer module's logic on the real MRML classes of ``slicer-core``, with tiny checkpoints.

``slicer-core`` is MRML without the application: here the scene gets what Slicer's
startup would give it (colour tables, the segmentation converter rules), and
``slicer_extension/MedGAN`` goes on ``sys.path`` as Slicer puts a module's folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer_extension" / "MedGAN"
sys.path.insert(0, str(MODULE_DIR))

from napari_medgan.core import api  # noqa: E402

# Slicer's Segmentations module registers these when the application starts.
_factory = slicer.vtkSegmentationConverterFactory.GetInstance()
for _rule in ("vtkBinaryLabelmapToClosedSurfaceConversionRule",
              "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
    _factory.RegisterConverterRule(getattr(slicer, _rule)())

@pytest.fixture
def scene():
    """A fresh MRML scene, also as ``slicer.mrmlScene``, with the default colour tables."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    yield scene
    colors.SetMRMLScene(None)
    scene.Clear(1)


def _tiny_model(config: api.Config) -> api.Config:
    config.model.patch_size = 16
    config.model.latent_dim = 8
    config.model.g_channels = config.model.d_channels = 4
    config.model.max_channels = 16
    config.model.unet_channels = (4, 8)
    config.model.patchgan_channels = 4
    config.train.batch_size, config.train.device = 2, "cpu"
    config.train.preview_every = config.train.checkpoint_every = 1000
    return config


@pytest.fixture(scope="session")
def tiny_training_config(tmp_path_factory):
    """A YAML config of tiny nets for ``medgan train --config``: a few steps take seconds."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    config = _tiny_model(api.Config())
    config.train.preview_every = config.train.checkpoint_every = 2
    api.save_config(config, path)
    return path


@pytest.fixture(scope="session")
def checkpoints(real_dir, tmp_path_factory):
    """One tiny trained checkpoint per task, on the real t1_a crop (and its partners)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    partners = {
        "synthesis": {},
        "translation": {"targets": ["gm_a"], "target_modality": "mr"},
        "cycle": {"targets": ["gm_a"], "target_modality": "mr"},
        "inpainting": {},
        "segmentation": {"labels": ["labels_a"]},
        "anomaly": {},
    }
    made = {}
    for task, data in partners.items():
        config = _tiny_model(api.Config())
        config.task = task
        config.data.paths = [str(real_dir / "t1_a.nii.gz")]
        for key, names in data.items():
            value = [str(real_dir / f"{n}.nii.gz") for n in names] if isinstance(names, list) \
                else names
            setattr(config.data, key, value)
        config.train.steps = 4
        if task == "cycle":
            config.train.identity_weight = 0.0  # T1 and a grey-matter map share no units
        if task == "anomaly":
            config.train.n_critic, config.train.encoder_fraction = 1, 0.5
        events = list(api.train(config, folder / task))
        assert events[-1].kind == "done", task
        made[task] = str(folder / task)
    assert set(made) == set(api.available_tasks())  # a new task needs a checkpoint here
    return made
