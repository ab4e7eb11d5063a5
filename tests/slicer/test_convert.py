"""Volume node ↔ core Volume ↔ file: voxels and IJK → RAS survive exactly, oblique ones too."""

import numpy as np
import pytest
import slicer
import torch
from MedGANLib.convert import (
    ijk_to_ras,
    node_from_volume,
    read_node_file,
    remove_node,
    segmentation_from_labels,
    volume_from_node,
    write_node_file,
)

from napari_medgan.core import api

from .mrml import OBLIQUE, load_node


def oblique_node(scene, real_dir, node_class="vtkMRMLScalarVolumeNode"):
    node = load_node(scene, real_dir / "t1_b.nii.gz", node_class)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(OBLIQUE))
    return node


def test_a_node_read_by_slicer_is_the_volume_the_core_reads(scene, real_dir):
    """Slicer's storage node (LPS file → RAS) and the core's reader agree voxel for voxel."""
    path = real_dir / "ct_a.nii.gz"
    volume = volume_from_node(load_node(scene, path))
    core = api.read_volume(path)
    assert volume.tensor.shape == core.tensor.shape == (1, 40, 40, 40)
    assert torch.equal(volume.tensor, core.tensor)
    np.testing.assert_allclose(volume.affine, core.affine, atol=1e-6)


def test_oblique_anisotropic_node_to_volume_and_back_is_exact(scene, real_dir):
    node = oblique_node(scene, real_dir)
    volume = volume_from_node(node)
    np.testing.assert_array_equal(volume.affine, OBLIQUE)
    assert volume.spacing == pytest.approx((0.8, 1.3, 2.1))
    kji = slicer.util.arrayFromVolume(node)
    assert volume.tensor[0, 3, 5, 7] == kji[7, 5, 3]  # tensor i, j, k = array k, j, i
    back = node_from_volume(volume, "back", scene=scene)
    np.testing.assert_array_equal(ijk_to_ras(back), OBLIQUE)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), kji)
    assert back is not node and node.GetName() == "t1_b"


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_node_file_core_node_round_trip_is_exact(scene, real_dir, tmp_path, suffix):
    node = oblique_node(scene, real_dir)
    path = write_node_file(node, str(tmp_path / f"t1{suffix}"))
    volume = api.read_volume(path)  # the core reads what Slicer wrote (LPS on disk)
    np.testing.assert_allclose(volume.affine, OBLIQUE, atol=1e-6)
    back = node_from_volume(volume, "back", scene=scene)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back),
                                  slicer.util.arrayFromVolume(node))
    np.testing.assert_allclose(ijk_to_ras(back), OBLIQUE, atol=1e-6)
    reread = read_node_file(api.write_volume(volume, tmp_path / f"core{suffix}"),
                            scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"))
    np.testing.assert_allclose(ijk_to_ras(reread), OBLIQUE, atol=1e-6)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(reread),
                                  slicer.util.arrayFromVolume(node))


def test_labels_become_one_segment_per_label_on_the_input_geometry(scene, real_dir, tmp_path):
    reference = oblique_node(scene, real_dir)
    labels = load_node(scene, real_dir / "labels_b.nii.gz", "vtkMRMLLabelMapVolumeNode")
    labels.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(OBLIQUE))
    volume = volume_from_node(labels, "labels")
    volume = api.Volume(volume.tensor.to(torch.uint8), volume.affine, "labels")
    before = scene.GetNumberOfNodes()
    node = segmentation_from_labels(volume, reference, [0, 1, 2, 3], "tissue", scene=scene)
    segmentation = node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    # labels 1 and 2 are in the map, 3 is not: still a segment, empty
    assert [(s.GetName(), s.GetLabelValue()) for s in segments] == [
        ("label 1", 1), ("label 2", 2), ("label 3", 3)]
    assert scene.GetNumberOfNodes() == before + 3  # the segmentation, its display, its colours
    # exported back on the input's grid, the label map is the one given, voxel for voxel
    path = write_node_file(node, str(tmp_path / "labels.nrrd"), reference=reference)
    back = api.read_volume(path)
    np.testing.assert_allclose(back.affine, OBLIQUE, atol=1e-6)
    assert torch.equal(back.tensor.to(torch.uint8), volume.tensor)


def test_exported_segments_keep_their_label_values_not_their_order(scene, real_dir, tmp_path):
    """Label values 2 and 5 (say, a model trained on a FreeSurfer-like map) come back as
    2 and 5 from the file a training run or a user's export writes, not as segments 1, 2."""
    reference = oblique_node(scene, real_dir)
    codes = torch.zeros(1, *volume_from_node(reference).spatial_shape, dtype=torch.uint8)
    codes[0, :10] = 2
    codes[0, -10:, :12] = 5
    labels = api.Volume(codes, OBLIQUE, "labels")
    names = ["background", "grey matter", "white matter", "CSF"]
    node = segmentation_from_labels(labels, reference, [0, 2, 5, 7], "tissue",
                                    segment_names=names, scene=scene)
    back = api.read_volume(write_node_file(node, str(tmp_path / "a.nrrd"), reference=reference))
    assert torch.equal(back.tensor.to(torch.uint8), codes)
    tables = scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems()  # no leftovers
    # written again into the same node: its colour table replaced, not one more
    shifted = api.Volume(torch.where(codes > 0, codes + 1, 0), OBLIQUE, "labels")
    segmentation_from_labels(shifted, reference, [0, 3, 6], "tissue", node=node, scene=scene)
    assert scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems() == tables
    back = api.read_volume(write_node_file(node, str(tmp_path / "b.nrrd"), reference=reference))
    assert torch.equal(back.tensor.to(torch.uint8), shifted.tensor)
    # a user's own conversion table is what Slicer exports with, and it is left alone
    user = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "user labels")
    user.SetTypeToUser()
    user.SetNumberOfColors(41)
    user.SetColor(40, "label 3", 1.0, 0.0, 0.0, 1.0)
    user.SetColor(30, "label 6", 0.0, 1.0, 0.0, 1.0)
    node.SetLabelmapConversionColorTableNodeID(user.GetID())
    back = api.read_volume(write_node_file(node, str(tmp_path / "c.nrrd"), reference=reference))
    assert torch.equal(back.tensor.to(torch.uint8), codes.clone().apply_(
        lambda v: {0: 0, 2: 40, 5: 30}[v]))
    segmentation_from_labels(shifted, reference, [0, 3, 6], "tissue", node=node, scene=scene)
    assert node.GetLabelmapConversionColorTableNode() is not user
    assert user.GetNumberOfColors() == 41 and user.GetColorName(40) == "label 3"


def test_colour_tables_of_deleted_segmentations_go_with_the_next_result(scene, real_dir):
    reference = oblique_node(scene, real_dir)
    labels = api.Volume(torch.zeros(1, *volume_from_node(reference).spatial_shape,
                                    dtype=torch.uint8), OBLIQUE, "labels")
    first = segmentation_from_labels(labels, reference, [0, 1], "first", scene=scene)
    table = first.GetLabelmapConversionColorTableNode()
    user = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "user's, used by nothing")
    remove_node(first)  # as the Data module deletes it: the table stays for now
    assert scene.GetNodeByID(table.GetID()) is table
    second = segmentation_from_labels(labels, reference, [0, 1], "second", scene=scene)
    assert scene.GetNodeByID(table.GetID()) is None
    assert second.GetLabelmapConversionColorTableNode().GetName() == "second label values"
    assert scene.GetNodeByID(user.GetID()) is user
