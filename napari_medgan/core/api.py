"""The public API of the core: what the napari plugin, the Slicer module and the CLI call.

>>> from napari_medgan.core import api
>>> config = api.Config()
>>> config.data.paths = ["brain.nii.gz"]
>>> for event in api.train(config, "ckpt"):          # doctest: +SKIP
...     print(event.step, event.losses)
>>> volumes = api.synthesize(api.load_model("ckpt"), n=4, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint, patch_affine
from .config import Config, load_config, save_config
from .data.dataset import load_training_volumes
from .data.io import read_volume, write_volume
from .data.normalize import IntensityNormalization, denormalize, normalize
from .data.patches import DevicePatchSampler
from .data.samples import SAMPLE_NAMES, sample_volume, write_sample
from .data.volume import Volume
from .device import resolve_device
from .errors import CheckpointError, ConfigError, DataError
from .tasks.base import Task
from .tasks.registry import available_tasks, get_task_class
from .train import StopRequest, TrainEvent
from .train import train as _train

__all__ = [
    "Config",
    "Model",
    "SAMPLE_NAMES",
    "TrainEvent",
    "Volume",
    "available_tasks",
    "evaluate",
    "load_config",
    "load_model",
    "read_volume",
    "sample_volume",
    "save_config",
    "synthesize",
    "train",
    "write_sample",
    "write_volume",
]

SYNTHESIS_BATCH = 16  # patches generated per forward pass


@dataclass
class Model:
    """A trained model ready for inference, with the card it was saved with."""

    path: Path
    card: dict[str, Any]
    task: Task
    normalization: IntensityNormalization

    @property
    def task_name(self) -> str:
        return self.card["task"]

    @property
    def patch_size(self) -> int:
        return int(self.card["patch_size"])


def train(
    config: Config, out: str | Path, *, stop: StopRequest = None, resume: str | Path | None = None
) -> Iterator[TrainEvent]:
    """Train and checkpoint into ``out``, yielding progress events; see :mod:`.train`."""
    return _train(config, out, stop=stop, resume=resume)


def load_model(path: str | Path, *, device: str = "auto", expect_task: str | None = None) -> Model:
    """Rebuild the nets a checkpoint's card describes and load its weights (no unpickling)."""
    checkpoint = load_checkpoint(path)
    card = checkpoint.card
    try:
        config = Config.from_dict(card["config"], source=f"the card of {path}")
        task_class = get_task_class(card["task"])
    except ConfigError as err:
        raise CheckpointError(f"Checkpoint {path} can't be used: {err}") from err
    if expect_task is not None and card["task"] != expect_task:
        raise CheckpointError(
            f"Checkpoint {path} holds a {card['task']!r} model; this needs a {expect_task!r} model."
        )
    task = task_class(config, resolve_device(device), channels=int(card.get("channels", 1)))
    task.load_weights(checkpoint.weights, checkpoint.path)
    normalization = IntensityNormalization.from_dict(card["normalization"])
    return Model(checkpoint.path, card, task.eval(), normalization)


def _as_model(model: Model | str | Path) -> Model:
    return model if isinstance(model, Model) else load_model(model)


def _require_synthesis(model: Model) -> None:
    if not model.task.can_synthesize:
        raise CheckpointError(
            f"Checkpoint {model.path} is a {model.task_name!r} model, which can't synthesize; "
            "train one with --task synthesis."
        )


def synthesize(model: Model | str | Path, n: int = 4, seed: int = 0) -> list[Volume]:
    """``n`` new patches in the training data's intensity units and voxel spacing."""
    model = _as_model(model)
    _require_synthesis(model)
    if n < 1:
        raise ConfigError(f"Asked for {n} volumes; ask for at least 1.")
    affine = patch_affine(model.card)
    volumes = []
    for start in range(0, n, SYNTHESIS_BATCH):
        count = min(SYNTHESIS_BATCH, n - start)
        patches = denormalize(model.normalization, model.task.sample(count, seed=seed + start))
        volumes += [
            Volume(p.cpu(), affine, name=f"synth_seed{seed}_{start + i:03d}")
            for i, p in enumerate(patches)
        ]
    return volumes


def evaluate(
    model: Model | str | Path, data: list[str | Path], *, n: int = 64, seed: int = 0
) -> dict[str, Any]:
    """Quality and privacy numbers of a synthesis model against held-out volumes ``data``.

    Patches are centred on foreground voxels (above the lowest 5 % of the
    normalised range), so empty background doesn't make every set look alike.
    The memorisation report needs the training files named on the card; when
    they are gone it is left out and ``notes`` says so.
    """
    from . import metrics

    model = _as_model(model)
    _require_synthesis(model)
    synthetic = model.task.sample(n, seed=seed).cpu()  # normalised, as the real patches below
    held_out = _foreground_patches(model, data, n, seed + 1)
    notes = []
    training_files = [f for f in model.card["data"].get("files", []) if Path(f).exists()]
    training = None
    if training_files:
        training = _foreground_patches(model, training_files, max(4 * n, 256), seed + 2)
    else:
        notes.append("memorisation left out: the training files named on the card are not on disk")
    report = metrics.synthesis_report(synthetic, held_out, training)
    report.update(n_synthetic=n, held_out_files=[str(p) for p in data], notes=notes)
    return report


def _foreground_patches(model: Model, paths: list, n: int, seed: int) -> torch.Tensor:
    data = load_training_volumes(paths, patch_size=model.patch_size)
    volumes = [normalize(model.normalization, v.tensor) for v in data.volumes]
    masks = [(v[:1] > -0.9) for v in volumes]
    if not all(bool(m.any()) for m in masks):
        raise DataError(
            f"One of {', '.join(map(str, paths))} has no foreground to take patches from."
        )
    sampler = DevicePatchSampler(
        volumes, model.patch_size, n, device=torch.device("cpu"), seed=seed, masks=masks
    )
    return sampler.next_batch()
