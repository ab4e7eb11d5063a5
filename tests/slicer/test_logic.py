"""MedGANLogic.synthesize / apply on real MRML nodes, with a tiny checkpoint of every task."""

import numpy as np
import pytest
import slicer
import torch
from MedGANLib.convert import ijk_to_ras, write_node_file
from MedGANLib.logic import LABELS_REFERENCE, MedGANLogic

from napari_medgan.core import api

from .conftest import _tiny_model
from .mrml import OBLIQUE, load_node

APPLIED = ["translation", "cycle", "inpainting", "segmentation", "anomaly"]


def test_synthesize_puts_n_nodes_with_the_cards_spacing_in_the_scene(scene, checkpoints):
    card = api.load_model(checkpoints["synthesis"]).card
    nodes = MedGANLogic().synthesize(checkpoints["synthesis"], n=3, seed=5,
                                     center_ras=(10.0, -20.0, 30.0))
    assert len(nodes) == 3
    assert [n.GetName() for n in nodes] == [f"synthesis_seed5_{i:03d}" for i in range(3)]
    for node in nodes:
        assert scene.IsNodePresent(node) and node.IsA("vtkMRMLScalarVolumeNode")
        assert node.GetImageData().GetDimensions() == (16, 16, 16)
        np.testing.assert_allclose(node.GetSpacing(), card["spacing"], atol=1e-9)
        affine = ijk_to_ras(node)
        np.testing.assert_allclose(affine[:3, :3], np.asarray(card["direction"])
                                   * np.asarray(card["spacing"]), atol=1e-9)
        np.testing.assert_allclose(affine @ [7.5, 7.5, 7.5, 1], [10, -20, 30, 1], atol=1e-9)
        assert node.GetAttribute("MedGAN.task") == "synthesis"
    # the same seed gives the same patches as the core; another seed other ones
    core = api.synthesize(checkpoints["synthesis"], n=3, seed=5)[0]
    array = slicer.util.arrayFromVolume(nodes[0])
    np.testing.assert_allclose(array, core.tensor[0].numpy().transpose(2, 1, 0), atol=1e-5)
    assert not np.allclose(array, slicer.util.arrayFromVolume(nodes[1]))


@pytest.fixture(scope="module")
def pairs_checkpoint(real_dir, tmp_path_factory):
    """A tiny synthesis model of t1_a with a 0/255 tissue mask: it draws image + label pairs."""
    folder = tmp_path_factory.mktemp("pairs")
    labels = api.read_volume(real_dir / "labels_a.nii.gz")
    mask = api.Volume((labels.tensor > 0).to(torch.uint8) * 255, labels.affine, "t1_a_mask")
    api.write_volume(mask, folder / "t1_a_mask.nii.gz")
    config = _tiny_model(api.Config())
    config.data.paths = [str(real_dir / "t1_a.nii.gz")]
    config.data.labels = [str(folder / "t1_a_mask.nii.gz")]
    config.train.steps = 4
    assert list(api.train(config, folder / "ckpt"))[-1].kind == "done"
    return str(folder / "ckpt")


def test_a_labelled_model_adds_a_segmentation_on_each_patchs_geometry(
        scene, pairs_checkpoint, tmp_path):
    nodes = MedGANLogic().synthesize(pairs_checkpoint, n=2, seed=4,
                                     center_ras=(5.0, 6.0, 7.0))
    assert len(nodes) == 2
    pairs = api.synthesize_pairs(pairs_checkpoint, n=2, seed=4)
    for node, (image, labels) in zip(nodes, pairs, strict=True):
        segmentation = node.GetNodeReference(LABELS_REFERENCE)
        assert segmentation.IsA("vtkMRMLSegmentationNode") and scene.IsNodePresent(segmentation)
        assert segmentation.GetName() == f"{node.GetName()} labels"
        assert segmentation.GetAttribute("MedGAN.task") == "synthesis"
        segments = segmentation.GetSegmentation()
        found = [segments.GetNthSegment(i) for i in range(segments.GetNumberOfSegments())]
        assert [(s.GetName(), s.GetLabelValue()) for s in found] == [("class 1", 255)]
        np.testing.assert_allclose(slicer.util.arrayFromVolume(node),
                                   image.tensor[0].numpy().transpose(2, 1, 0), atol=1e-5)
        # exported on the patch's grid (as segment numbers): the core's label map, voxel
        # for voxel, where the segment's label value (255) says which value it stands for
        path = write_node_file(segmentation, str(tmp_path / f"{node.GetName()}.nrrd"),
                               reference=node)
        back = api.read_volume(path)
        np.testing.assert_allclose(back.affine, ijk_to_ras(node), atol=1e-6)
        assert set(labels.tensor.unique().tolist()) <= {0, 255}
        assert torch.equal(back.tensor > 0, labels.tensor == 255)
        assert 0 < int((labels.tensor == 255).sum()) < labels.tensor.numel()
    # no stray label map nodes are left behind: 2 volumes + 2 segmentations (+ displays)
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_a_model_without_labels_adds_no_segmentation(scene, checkpoints):
    (node,) = MedGANLogic().synthesize(checkpoints["synthesis"], n=1)
    assert node.GetNodeReference(LABELS_REFERENCE) is None
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


@pytest.fixture
def t1_node(scene, real_dir):
    """The held-out T1 crop, read by Slicer, put on an oblique, anisotropic grid."""
    node = load_node(scene, real_dir / "t1_b.nii.gz")
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(OBLIQUE))
    return node


def hole_mask(scene, reference):
    mask = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "hole")
    array = np.zeros(slicer.util.arrayFromVolume(reference).shape, np.uint8)
    array[14:26, 14:26, 14:26] = 1
    slicer.util.updateVolumeFromArray(mask, array)
    mask.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(reference)))
    return mask


@pytest.mark.parametrize("task", APPLIED)
def test_apply_keeps_the_inputs_geometry_for_every_task(scene, checkpoints, t1_node, task):
    mask = hole_mask(scene, t1_node) if task == "inpainting" else None
    before = slicer.util.arrayFromVolume(t1_node).copy()
    result = MedGANLogic().apply(checkpoints[task], t1_node, mask_node=mask)
    assert result is not t1_node and scene.IsNodePresent(result)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(t1_node), before)
    core = api.apply(checkpoints[task], api.Volume(
        torch.from_numpy(before.transpose(2, 1, 0).astype(np.float32).copy())[None], OBLIQUE),
        mask=None if mask is None else api.Volume(
            torch.from_numpy(slicer.util.arrayFromVolume(mask).transpose(2, 1, 0).copy())[None]
            .float(), OBLIQUE))
    if task == "segmentation":
        assert result.IsA("vtkMRMLSegmentationNode")
        segmentation = result.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName()
                 for i in range(segmentation.GetNumberOfSegments())]
        assert names == ["label 1", "label 2"]
        geometry = segmentation.GetConversionParameter("Reference image geometry")
        spacing_and_directions = np.array(geometry.split(";")[:12], dtype=float).reshape(3, 4)
        np.testing.assert_allclose(spacing_and_directions[:, :3], OBLIQUE[:3, :3], atol=1e-6)
        np.testing.assert_allclose(spacing_and_directions[:, 3], OBLIQUE[:3, 3], atol=1e-6)
        return
    assert result.IsA("vtkMRMLScalarVolumeNode")
    assert result.GetName() == f"t1_b_{task}"
    np.testing.assert_allclose(ijk_to_ras(result), ijk_to_ras(t1_node), atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(result),
                               core.tensor[0].numpy().transpose(2, 1, 0), atol=1e-4)
    assert result.GetAttribute("MedGAN.task") == task
    if task == "anomaly":
        score = float(result.GetAttribute("MedGAN.anomaly_score"))
        assert score == pytest.approx(api.anomaly_score(core), rel=1e-4)
        assert score > float(core.tensor.mean())
    if task == "inpainting":  # outside the hole, the input exactly
        outside = slicer.util.arrayFromVolume(mask) == 0
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(result)[outside],
                                      before[outside])


def test_cycle_maps_back_with_reverse(scene, checkpoints, t1_node):
    forward = MedGANLogic().apply(checkpoints["cycle"], t1_node)
    back = MedGANLogic().apply(checkpoints["cycle"], forward, reverse=True)
    assert back.GetName() == "t1_b_cycle_cycle_reverse"
    np.testing.assert_allclose(ijk_to_ras(back), OBLIQUE, atol=1e-6)
    assert not np.allclose(slicer.util.arrayFromVolume(back),
                           slicer.util.arrayFromVolume(forward))


def test_an_output_node_is_written_only_when_chosen(scene, checkpoints, t1_node):
    chosen = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my output")
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "untouched")
    count = scene.GetNumberOfNodes()
    result = MedGANLogic().apply(checkpoints["translation"], t1_node, output_node=chosen)
    assert result is chosen and chosen.GetName() == "my output"
    assert scene.GetNumberOfNodes() == count  # nothing new
    np.testing.assert_allclose(ijk_to_ras(chosen), OBLIQUE, atol=1e-6)
    assert slicer.util.arrayFromVolume(chosen).shape == (40, 40, 40)
    assert other.GetImageData() is None
