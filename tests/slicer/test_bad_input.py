"""Bad input to the Slicer logic: one clear error naming the node or checkpoint; the scene
keeps every node as it was and gains none."""

import shutil

import numpy as np
import pytest
import slicer
import torch
from MedGANLib.convert import ijk_to_ras
from MedGANLib.logic import MedGANLogic

from napari_medgan.core.errors import CheckpointError, DataError, DeviceError

from .mrml import load_node, node_state


@pytest.fixture
def t1_node(scene, real_dir):
    return load_node(scene, real_dir / "t1_b.nii.gz")


def refused(scene, call, error, match, *watched):
    """``call()`` raises ``error`` matching ``match``; no node appears, none changes."""
    count = scene.GetNumberOfNodes()
    before = [node_state(n) for n in watched]
    with pytest.raises(error, match=match):
        call()
    assert scene.GetNumberOfNodes() == count
    assert [node_state(n) for n in watched] == before


def test_no_input_selected(scene, checkpoints):
    refused(scene, lambda: MedGANLogic().apply(checkpoints["translation"], None), DataError,
            "No input volume is selected")


def test_a_2d_volume(scene, checkpoints):
    flat = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "slice")
    slicer.util.updateVolumeFromArray(flat, np.random.rand(1, 30, 30).astype(np.float32))
    refused(scene, lambda: MedGANLogic().apply(checkpoints["translation"], flat), DataError,
            "input 'slice' is a 2D image", flat)


def test_a_vector_rgb_volume(scene, checkpoints):
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    slicer.util.updateVolumeFromArray(rgb, np.zeros((8, 8, 8, 3), np.uint8))
    refused(scene, lambda: MedGANLogic().apply(checkpoints["translation"], rgb), DataError,
            "'photo' is a vtkMRMLVectorVolumeNode, not a scalar volume", rgb)


def test_a_volume_under_a_transform(scene, checkpoints, t1_node):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    t1_node.SetAndObserveTransformNodeID(transform.GetID())
    refused(scene, lambda: MedGANLogic().apply(checkpoints["translation"], t1_node), DataError,
            "'t1_b' is under the transform 'registration'.*[Hh]arden", t1_node)


def test_a_mask_on_another_grid(scene, checkpoints, t1_node, real_dir):
    mask = load_node(scene, real_dir / "labels_b.nii.gz", "vtkMRMLLabelMapVolumeNode")
    matrix = ijk_to_ras(mask)
    matrix[:3, 3] += 5.0
    mask.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    refused(scene, lambda: MedGANLogic().apply(checkpoints["inpainting"], t1_node, mask),
            DataError, "not on the voxel grid", t1_node, mask)


def test_a_checkpoint_of_another_task(scene, checkpoints, t1_node):
    refused(scene, lambda: MedGANLogic().apply(checkpoints["synthesis"], t1_node),
            CheckpointError, "'synthesis' model, which is not applied to volumes", t1_node)
    refused(scene, lambda: MedGANLogic().synthesize(checkpoints["translation"], 2),
            CheckpointError, "can't synthesize")


def test_a_missing_or_corrupt_checkpoint(scene, checkpoints, t1_node, tmp_path):
    refused(scene, lambda: MedGANLogic().apply(str(tmp_path / "nothing"), t1_node),
            CheckpointError, "nothing", t1_node)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(checkpoints["translation"], corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    refused(scene, lambda: MedGANLogic().apply(str(corrupt), t1_node), CheckpointError,
            "corrupt", t1_node)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_where_there_is_none(scene, checkpoints, t1_node):
    refused(scene, lambda: MedGANLogic().apply(checkpoints["translation"], t1_node,
                                               device="cuda"),
            DeviceError, "sees no CUDA GPU", t1_node)
