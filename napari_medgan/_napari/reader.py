"""Open 3D medical volumes in napari through the core's IO (no second reader).

NIfTI, NRRD, MetaImage, TIFF stacks and DICOM series folders open with their true
geometry (see :mod:`.convert`); an integer volume that is named or looks like a label
map opens as a Labels layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from napari_medgan.core import api

from .convert import LayerDataTuple, volume_to_layer_data

#: File names that say "label map" (when the voxels are non-negative integers).
_LABEL_NAME = re.compile(r"label|seg|mask", re.IGNORECASE)
#: At most this many distinct non-negative integers make an unnamed volume a label map.
_MAX_LABEL_VALUES = 32

PathOrPaths = str | Path | Sequence[str | Path]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerDataTuple]] | None:
    """``read_volumes`` when every path is a volume this plugin reads, else ``None``."""
    try:
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        if paths and all(api.is_volume_path(p) for p in paths):
            return read_volumes
    except (TypeError, ValueError):  # not a path at all: napari asks other readers
        pass
    return None


def read_volumes(path: PathOrPaths) -> list[LayerDataTuple]:
    """One layer per volume, in the file's RAS millimetres, its path in ``metadata``."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for one in paths:
        volume = api.read_volume(one)
        kind = "labels" if is_label_map(volume.tensor, volume.name) else "image"
        layers.append(volume_to_layer_data(volume, layer_type=kind, source=str(one)))
    return layers


def is_label_map(tensor: torch.Tensor, name: str) -> bool:
    """Non-negative whole numbers, and a name saying so or only a few distinct values."""
    if tensor.numel() == 0 or tensor.min() < 0 or not torch.equal(tensor, tensor.round()):
        return False
    if _LABEL_NAME.search(name):
        return True
    return tensor.max() < 256 and len(torch.unique(tensor)) <= _MAX_LABEL_VALUES
