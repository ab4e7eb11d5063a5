"""The one place where napari layers and core volumes meet: geometry both ways.

World coordinates are the file's RAS millimetres: a point in napari is the point
in the file. napari 0.9 can't show a layer whose affine permutes axes (its 2D view's
displayed sub-affine becomes singular), so the voxel axes are transposed until each
data axis follows its nearest world axis; the file's own affine and axis order stay
in the layer's ``metadata`` and :func:`layer_to_volume` undoes the transpose, so a
file opened and saved again keeps its voxel order and affine exactly.

- axis-aligned volumes get ``scale`` + ``translate`` (napari slices them cleanly);
- oblique ones get the full ``affine``.

>>> data, kwargs, kind = volume_to_layer_data(api.read_volume("ct.nrrd"))  # doctest: +SKIP
>>> volume = layer_to_volume(viewer.layers["ct"])                       # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from napari.utils.transforms import Affine, CompositeAffine

from napari_medgan.core.api import Volume
from napari_medgan.core.errors import DataError

LayerDataTuple = tuple[Any, dict[str, Any], str]
#: Off-diagonal terms (relative to the voxel size) below this count as axis-aligned.
_OBLIQUE_TOLERANCE = 1e-6
#: A layer transform this close (mm) to the one stored in metadata restores the stored one.
_AFFINE_TOLERANCE_MM = 1e-4
_LABEL_DTYPES = (np.uint8, np.int16, np.int32)


def data_axes(affine: np.ndarray) -> tuple[int, int, int]:
    """The voxel axis each data axis takes: data axis ``n`` follows world axis ``n``."""
    weight = np.abs(np.asarray(affine)[:3, :3])
    weight = weight / weight.sum(axis=0, keepdims=True)
    best = max(itertools.permutations(range(3)),
               key=lambda order: sum(weight[n, axis] for n, axis in enumerate(order)))
    return tuple(int(a) for a in best)  # type: ignore[return-value]


def volume_to_layer_data(
    volume: Volume,
    *,
    layer_type: str = "image",
    name: str | None = None,
    source: str | None = None,
    **layer_kwargs: Any,
) -> LayerDataTuple:
    """A napari layer data tuple showing ``volume`` in the file's RAS millimetres.

    ``layer_type`` is ``"image"`` or ``"labels"`` (integer data). ``source``: the path it
    was read from, kept in ``metadata``. Other keyword arguments go to the layer as given.
    """
    if layer_type not in ("image", "labels"):
        raise ValueError(f"layer_type must be 'image' or 'labels', got {layer_type!r}")
    axes = data_axes(volume.affine)
    data = volume.tensor.detach().cpu().numpy().transpose(0, *(a + 1 for a in axes))
    channels = data.shape[0]  # several (time points, echoes) stay a leading axis to browse
    data = data[0] if channels == 1 else data
    if layer_type == "labels" and not np.issubdtype(data.dtype, np.integer):
        data = data.astype(_label_dtype(data))
    linear = volume.affine[:3, list(axes)]
    origin = volume.affine[:3, 3]
    kwargs: dict[str, Any] = {"name": name or volume.name, "units": ("mm",) * 3}
    lead = [] if channels == 1 else [0]  # the leading axis: no length, at 0
    spacing = np.diag(linear)
    if np.all(np.abs(linear - np.diag(spacing)) <= _OBLIQUE_TOLERANCE * np.abs(spacing).max()):
        kwargs.update(scale=tuple(float(s) for s in [1, *spacing][1 - len(lead):]),
                      translate=tuple(float(t) for t in [*lead, *origin]))
    else:
        matrix = np.eye(4 + len(lead))
        matrix[-4:-1, -4:-1], matrix[-4:-1, -1] = linear, origin
        kwargs["affine"] = matrix
    if lead:
        kwargs["units"] = ("", "mm", "mm", "mm")
    metadata = {"affine": volume.affine.tolist(), "axes": list(axes)}
    if source is not None:
        metadata["source"] = source
    kwargs["metadata"] = {**metadata, **layer_kwargs.pop("metadata", {})}
    kwargs.update(layer_kwargs)
    return data, kwargs, layer_type


def layer_to_volume(layer: Any) -> Volume:
    """The core volume of a napari Image or Labels layer, in its file's voxel order.

    The geometry is the layer's own (scale, translate, rotate, shear, affine); when it
    still matches the affine the reader stored in ``metadata``, the stored axis order
    and affine come back exactly. The volume is named ``layer:<layer name>``.
    """
    data, state, layer_type = layer.as_layer_data_tuple()
    return layer_data_to_volume(data, state, layer_type)


def layer_data_to_volume(data: Any, state: dict[str, Any], layer_type: str) -> Volume:
    """:func:`layer_to_volume` for a layer's ``(data, attributes, type)``, as writers get it."""
    label = f"layer:{state.get('name', '')}"
    if layer_type not in ("image", "labels"):
        raise DataError(f"{label} is a {layer_type} layer; pick an Image or Labels layer.")
    if state.get("multiscale"):
        data = data[0]  # the full-resolution level carries the layer's geometry
    if state.get("rgb"):
        raise DataError(f"{label} is an RGB(A) image; a 3D grey-value volume is needed. Open "
                        "a single-channel volume, or convert this one to greyscale first.")
    array = np.asarray(data)
    if array.ndim < 3 or min(array.shape) == 1:
        raise DataError(f"{label} is a 2D image (shape {array.shape}); a 3D volume is needed.")
    if array.ndim > 3:
        raise DataError(f"{label} has {array.ndim} dimensions (shape {array.shape}): a time "
                        "axis or channels; pick one 3D volume of it first (e.g. one time point).")
    world = _data_to_world(state)
    stored = state.get("metadata") or {}
    axes = list(stored.get("axes", (0, 1, 2)))
    if sorted(axes) != [0, 1, 2]:
        axes = [0, 1, 2]
    affine = np.eye(4)
    affine[:3, axes] = world[:3, :3]
    affine[:3, 3] = world[:3, 3]
    if "affine" in stored and np.allclose(stored["affine"], affine, atol=_AFFINE_TOLERANCE_MM):
        affine = np.asarray(stored["affine"], dtype=np.float64)
    voxels = np.ascontiguousarray(array.transpose(np.argsort(axes)))
    if layer_type == "image" or not np.issubdtype(voxels.dtype, np.integer):
        tensor = torch.from_numpy(voxels.astype(np.float32))
    else:
        tensor = torch.from_numpy(voxels.astype(_label_dtype(voxels)))
    return Volume(tensor[None], affine, name=label)


def placed_in_a_row(volumes: list[Volume], *, axis: int = 2, centre: Any = None,
                    gap: float = 0.25) -> list[Volume]:
    """The volumes moved along world ``axis`` (0 R, 1 A, 2 S) to lie side by side.

    Each keeps its voxels, spacing and orientation; neighbours are ``gap`` of a volume's
    width apart and the row is centred on ``centre`` (world mm; the origin if None).
    """
    corners = np.array(list(itertools.product(*[(0, 1)] * 3)), dtype=np.float64)
    placed = []
    for volume in volumes:
        extent = corners * np.asarray(volume.spatial_shape)
        world = (volume.affine[:3, :3] @ extent.T).T + volume.affine[:3, 3]
        placed.append((volume, world.min(axis=0), world.max(axis=0)))
    step = max(high[axis] - low[axis] for _, low, high in placed) * (1 + gap)
    target = np.zeros(3) if centre is None else np.asarray(centre, dtype=np.float64)[-3:]
    moved = []
    for index, (volume, low, high) in enumerate(placed):
        shift = target - (low + high) / 2
        shift[axis] += (index - (len(placed) - 1) / 2) * step
        affine = volume.affine.copy()
        affine[:3, 3] += shift
        moved.append(Volume(volume.tensor, affine, volume.name))
    return moved


def _data_to_world(state: dict[str, Any]) -> np.ndarray:
    """The layer's 4x4 data → world matrix, composed as napari does (affine after the rest)."""
    physical = CompositeAffine(state["scale"], state["translate"], rotate=state["rotate"],
                               shear=state["shear"], ndim=3)
    return Affine(affine_matrix=np.asarray(state["affine"])).affine_matrix @ physical.affine_matrix


def _label_dtype(data: np.ndarray) -> type:
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    return next(t for t in _LABEL_DTYPES if np.iinfo(t).min <= low and high <= np.iinfo(t).max)
