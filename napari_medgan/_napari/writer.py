"""Save Image and Labels layers to .nii.gz / .nrrd with their geometry.

A layer the plugin opened comes back in its file's own voxel order and affine; any
other layer is saved with its scale, translate, rotation and affine as RAS millimetres.
napari's save dialog has already asked before replacing a file, so the file is replaced.
"""

from __future__ import annotations

from typing import Any

from napari_medgan.core import api

from .convert import layer_data_to_volume


def write_image(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 writer for one Image layer."""
    return _write(path, data, attributes, "image")


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 writer for one Labels layer: integer voxels."""
    return _write(path, data, attributes, "labels")


def _write(path: str, data: Any, attributes: dict[str, Any], layer_type: str) -> list[str]:
    volume = layer_data_to_volume(data, attributes, layer_type)
    return [str(api.write_volume(volume, path, overwrite=True))]
