"""Volume nodes ↔ the core's ``Volume``, keeping the voxel grid exactly.

A volume node keeps its voxels as VTK image data whose numpy view
(``arrayFromVolume``) is in KJI order, and its geometry as the IJKToRAS matrix
(spacing, origin and direction in RAS millimetres). A core ``Volume`` holds a
``(C, i, j, k)`` tensor and the same IJK → RAS matrix as its affine. So the
conversion only reverses the axes and copies the matrix: nothing is resampled
and spacing, origin and oblique directions come back bit for bit. Files are LPS
on disk; the storage node converts, so they need nothing here.

A parent transform is not part of IJKToRAS: a node under one is refused with the
names of both, rather than silently used without it.
"""

from __future__ import annotations

import numpy as np
import slicer
import torch
import vtk
from slicer.util import (
    arrayFromVolume,
    arrayFromVTKMatrix,
    updateVolumeFromArray,
    vtkMatrixFromArray,
)

from napari_medgan.core.api import Volume
from napari_medgan.core.errors import DataError

SCALAR_VOLUME = "vtkMRMLScalarVolumeNode"
LABELMAP_VOLUME = "vtkMRMLLabelMapVolumeNode"
SEGMENTATION = "vtkMRMLSegmentationNode"
COLOR_TABLE = "vtkMRMLColorTableNode"
# scalar volume subclasses with several values per voxel
MULTI_COMPONENT = ("vtkMRMLVectorVolumeNode", "vtkMRMLTensorVolumeNode")


def check_volume_node(node, role: str) -> None:
    """Refuse what the core can't take: no node, a vector / RGB or 2D volume, a transformed node.

    ``role`` ("input", "mask", "training volume" …) names the slot in the message.
    """
    if node is None:
        raise DataError(f"No {role} volume is selected; choose one in the MedGAN module.")
    name = node.GetName()
    if not node.IsA(SCALAR_VOLUME) or any(node.IsA(c) for c in MULTI_COMPONENT):
        raise DataError(
            f"The {role} '{name}' is a {node.GetClassName()}, not a scalar volume; "
            "choose a single-channel volume (for a colour image, convert it to scalar first, "
            "e.g. with the Vector to Scalar Volume module)."
        )
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise DataError(f"The {role} '{name}' holds no voxels; load or choose another volume.")
    if image.GetNumberOfScalarComponents() != 1:
        raise DataError(
            f"The {role} '{name}' has {image.GetNumberOfScalarComponents()} components per "
            "voxel; a single-channel volume is needed."
        )
    if min(image.GetDimensions()) == 1:
        raise DataError(
            f"The {role} '{name}' is a 2D image (dimensions {image.GetDimensions()}); "
            "a 3D volume is needed."
        )
    transform = node.GetParentTransformNode()
    if transform is not None:
        raise DataError(
            f"The {role} '{name}' is under the transform '{transform.GetName()}', which its "
            "voxel grid does not include; harden the transform (Data module: right-click → "
            "Harden transform) or remove it, then try again."
        )


def ijk_to_ras(node) -> np.ndarray:
    """The node's 4x4 IJK → RAS matrix as numpy."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return arrayFromVTKMatrix(matrix)


def volume_from_node(node, role: str = "input") -> Volume:
    """A copy of the node's voxels as a one-channel float32 ``Volume`` on its exact grid."""
    check_volume_node(node, role)
    kji = arrayFromVolume(node)
    ijk = np.ascontiguousarray(kji.transpose(2, 1, 0), dtype=np.float32)
    return Volume(torch.from_numpy(ijk)[None], ijk_to_ras(node), name=node.GetName())


def node_from_volume(volume: Volume, name: str, *, node=None, scene=None,
                     node_class: str = SCALAR_VOLUME):
    """Write ``volume`` into ``node`` (the user chose it as output) or into a new node.

    The node gets the volume's affine as IJKToRAS; a new one is a ``node_class``
    (scalar or label map volume) with default display nodes.
    """
    scene = scene or slicer.mrmlScene
    if node is None:
        node = scene.AddNewNodeByClass(node_class, name)
        node.CreateDefaultDisplayNodes()
    elif not node.IsA(node_class):
        raise DataError(
            f"The output '{node.GetName()}' is a {node.GetClassName()}; this result needs a "
            f"{node_class}: choose another output or create a new one."
        )
    tensor = volume.tensor.detach().cpu()
    if tensor.shape[0] != 1:
        raise DataError(f"{name} has {tensor.shape[0]} channels; a volume node holds one.")
    updateVolumeFromArray(node, np.ascontiguousarray(tensor[0].numpy().transpose(2, 1, 0)))
    node.SetIJKToRASMatrix(vtkMatrixFromArray(volume.affine))
    return node


def segmentation_from_labels(labels: Volume, reference, label_values: list[int], name: str, *,
                             segment_names: list[str] | None = None, node=None, scene=None):
    """A segmentation node with one segment per label value but the first (background).

    Segments keep their label value and are named ``segment_names`` (one per value,
    background included) or ``label N``; a label the model did not predict anywhere is
    an empty segment, so the segment list is the same for every volume. The reference
    image geometry is the input ``reference``'s. The node's labelmap conversion colour
    table names each value, so an export (:func:`write_node_file`, Slicer's own) writes
    the label values, not the segments' order.
    """
    names = dict(zip(label_values, segment_names or [f"label {v}" for v in label_values],
                     strict=True))
    scene = scene or slicer.mrmlScene
    if node is not None and not node.IsA(SEGMENTATION):
        raise DataError(
            f"The output '{node.GetName()}' is a {node.GetClassName()}; a segmentation "
            "result needs a segmentation node: choose another output or create a new one."
        )
    labelmap = node_from_volume(labels, f"{name} labels", scene=scene, node_class=LABELMAP_VOLUME)
    try:
        if node is None:
            node = scene.AddNewNodeByClass(SEGMENTATION, name)
            node.CreateDefaultDisplayNodes()
        else:
            node.GetSegmentation().RemoveAllSegments()
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ImportLabelmapToSegmentationNode(labelmap, node):
            raise DataError(f"The labels of {name} could not be turned into segments.")
        segmentation = node.GetSegmentation()
        present = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            present[segment.GetLabelValue()] = segment
        for value in label_values[1:]:
            if value in present:
                present[value].SetName(names[value])
            else:
                segment_id = segmentation.AddEmptySegment(f"label_{value}", names[value])
                segmentation.GetSegment(segment_id).SetLabelValue(value)
        _name_label_values(node, {value: names[value] for value in label_values[1:]})
        _remove_unused_own_tables(scene)
    finally:
        remove_node(labelmap)
    return node


#: marks the colour tables this module made, which it removes once no segmentation uses
#: them (a user's it leaves alone)
OWN_COLOR_TABLE = "MedGAN.labelValues"


def _name_label_values(node, names: dict[int, str]) -> None:
    """Give ``node`` a new labelmap conversion colour table with ``names[value]`` at each
    value (Slicer exports a segment with the value of the colour named as it is; it caches
    a table's names, so a table is replaced, not edited)."""
    scene = node.GetScene()
    table = scene.AddNewNodeByClass(COLOR_TABLE, f"{node.GetName()} label values")
    table.SetAttribute(OWN_COLOR_TABLE, "1")
    table.SetTypeToUser()
    table.SetNumberOfColors(max(names, default=0) + 1)
    table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    segmentation = node.GetSegmentation()
    colors = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i).GetColor()
              for i in range(segmentation.GetNumberOfSegments())}
    for value, name in names.items():
        table.SetColor(value, name, *colors.get(name, (0.5, 0.5, 0.5)), 1.0)
    node.SetLabelmapConversionColorTableNodeID(table.GetID())


def _remove_unused_own_tables(scene) -> None:
    """Remove the colour tables of ours that no segmentation uses any more: the one a
    result replaced, and those of segmentations the user deleted."""
    used = {scene.GetNodeByID(segmentation_id).GetLabelmapConversionColorTableNodeID()
            for segmentation_id in _node_ids(scene, SEGMENTATION)}
    for table_id in _node_ids(scene, COLOR_TABLE) - used:
        table = scene.GetNodeByID(table_id)
        if table.GetAttribute(OWN_COLOR_TABLE) is not None:
            scene.RemoveNode(table)


def remove_node(node) -> None:
    """Remove a temporary node with its display nodes (RemoveNode alone leaves those)."""
    scene = node.GetScene()
    display = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    for item in [node, *display]:
        scene.RemoveNode(item)


def write_node_file(node, path: str, *, reference=None, role: str = "training volume") -> str:
    """Write a volume node (or a segmentation, as a label map on ``reference``'s grid) to ``path``.

    The storage node writes the exact voxels and geometry (LPS in the file); this is
    how volume nodes become training files for a ``medgan train`` process. A
    segmentation's visible segments get the values of its labelmap conversion colour
    table, as in Slicer's own export (a segment named as a colour takes its value; without
    a table, or for a name not in it, Slicer numbers the segments).
    """
    if node is not None and node.IsA(SEGMENTATION):
        if reference is None:
            raise DataError(f"The segmentation '{node.GetName()}' needs a volume to give its grid.")
        scene = node.GetScene()
        tables_before = _node_ids(scene, COLOR_TABLE)
        labelmap = scene.AddNewNodeByClass(LABELMAP_VOLUME, f"{node.GetName()} labels")
        try:
            segment_ids = vtk.vtkStringArray()  # the visible ones; all without a display
            display = node.GetDisplayNode()
            if display is None:
                node.GetSegmentation().GetSegmentIDs(segment_ids)
            else:
                display.GetVisibleSegmentIDs(segment_ids)
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.ExportSegmentsToLabelmapNode(
                    node, segment_ids, labelmap, reference,
                    slicer.vtkSegmentation.EXTENT_UNION_OF_EFFECTIVE_SEGMENTS,
                    node.GetLabelmapConversionColorTableNode()):
                raise DataError(
                    f"The segmentation '{node.GetName()}' could not be exported on the grid of "
                    f"'{reference.GetName()}'; check that it has visible segments."
                )
            return write_node_file(labelmap, path, role=role)
        finally:
            remove_node(labelmap)
            for table_id in _node_ids(scene, COLOR_TABLE) - tables_before:  # the export's own
                scene.RemoveNode(scene.GetNodeByID(table_id))
    check_volume_node(node, role)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(node):
        raise DataError(f"Could not write the {role} '{node.GetName()}' to {path}.")
    return str(path)


def _node_ids(scene, node_class: str) -> set[str]:
    nodes = scene.GetNodesByClass(node_class)
    return {nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())}


def read_node_file(path: str, node):
    """Read a volume file into ``node`` (e.g. the training preview), geometry included."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise DataError(f"Could not read {path} into '{node.GetName()}'.")
    return node
