"""Task names → task classes, so that every face can list tasks without knowing them."""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .base import Task

# name → module defining it; imported on first use so listing tasks stays cheap.
_TASK_MODULES = {
    "synthesis": "napari_medgan.core.tasks.synthesis",
    "translation": "napari_medgan.core.tasks.translation",
    "cycle": "napari_medgan.core.tasks.cycle",
    "inpainting": "napari_medgan.core.tasks.inpainting",
    "segmentation": "napari_medgan.core.tasks.segmentation",
    "anomaly": "napari_medgan.core.tasks.anomaly",
}


def available_tasks() -> list[str]:
    return sorted(_TASK_MODULES)


def get_task_class(name: str) -> type[Task]:
    if name not in _TASK_MODULES:
        raise ConfigError(f"Unknown task {name!r}; available: {', '.join(available_tasks())}.")
    module = importlib.import_module(_TASK_MODULES[name])
    return module.TASK
