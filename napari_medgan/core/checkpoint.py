"""Checkpoint = a directory: safetensors weights, safetensors training state, JSON card.

Nothing here unpickles: weights and optimiser tensors live in safetensors files,
everything else in JSON. Saving writes a sibling temporary directory and swaps
it in with renames, so a kill at any moment leaves a loadable checkpoint.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .card import check_card
from .errors import CheckpointError, OutputError
from .output import discard

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
CHECKPOINT_FILES = (CARD_FILE, WEIGHTS_FILE, STATE_FILE)
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar")
MISMATCH = "card and weights don't belong together."


@dataclass
class Checkpoint:
    path: Path
    card: dict[str, Any]
    weights: dict[str, torch.Tensor]
    training_state: dict[str, torch.Tensor] | None
    training_meta: dict[str, Any] | None


def patch_affine(card: dict[str, Any]) -> np.ndarray:
    """Affine for a generated patch: the training data's spacing and axes, origin at 0."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(card["direction"]) * np.asarray(card["spacing"])
    return affine


def _previous_dir(path: Path) -> Path:
    """Where the old checkpoint waits while a new one is swapped in."""
    return path.with_name(f".{path.name}.previous")


def save_checkpoint(
    path: str | Path,
    *,
    card: dict[str, Any],
    weights: dict[str, torch.Tensor],
    training_state: dict[str, torch.Tensor] | None = None,
    training_meta: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint directory atomically, replacing an older one at ``path``.

    A write that fails (disk full, read-only) raises :class:`OutputError` and leaves the
    older checkpoint as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            discard(stale)  # left by an earlier save that was killed
        tmp.mkdir()
        save_file(_portable(weights), tmp / WEIGHTS_FILE, metadata={"format": "napari-medgan"})
        if training_state is not None:
            meta = {"training_meta": json.dumps(training_meta or {})}
            save_file(_portable(training_state), tmp / STATE_FILE, metadata=meta)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=_json_default))
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    except (OSError, SafetensorError) as err:
        discard(tmp)
        kept = "the previous checkpoint there is intact" if path.is_dir() else "nothing was kept"
        reason = getattr(err, "strerror", None) or err
        raise OutputError(f"Could not save checkpoint {path} ({reason}); {kept}.") from err
    except BaseException:
        discard(tmp)
        raise
    previous = _previous_dir(path)
    if path.exists():
        discard(previous)
        os.rename(path, previous)
    os.rename(tmp, path)
    discard(previous)
    return path


def _portable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors wants contiguous CPU tensors that share no memory."""
    return {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"can't store {type(value).__name__} in a checkpoint card")


def _locate(path: Path) -> Path:
    """The directory to read: ``path``, or the old copy if a save was cut off mid-swap."""
    if path.is_dir():
        return path
    previous = _previous_dir(path)
    if not path.exists() and previous.is_dir():
        return previous
    if path.is_file():
        raise CheckpointError(_file_given_message(path))
    raise CheckpointError(
        f"Checkpoint {path} does not exist; give the folder that `medgan train --out` wrote."
    )


def _file_given_message(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(4)
    pickled = path.suffix.lower() in PICKLE_SUFFIXES or head[:1] == b"\x80" or head[:2] == b"PK"
    if pickled:
        return (
            f"{path} is a pickle-based PyTorch file. medgan never loads pickles, because "
            "unpickling can run arbitrary code; give a medgan checkpoint folder "
            f"({WEIGHTS_FILE} + {CARD_FILE}) instead."
        )
    return (
        f"{path} is a file; a medgan checkpoint is a folder holding {WEIGHTS_FILE} and {CARD_FILE}."
    )


def read_card(path: str | Path) -> dict[str, Any]:
    """The card alone, checked against its schema (:mod:`.card`): cheap enough for listing
    checkpoints in a face."""
    folder = _locate(Path(path))
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} has no {CARD_FILE}; it is incomplete or not a medgan checkpoint."
        )
    return check_card(_parse_json(card_path.read_bytes(), card_path), card_path)


def _parse_json(text: bytes | str, source: Path) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        problem = "nested too deeply" if isinstance(err, RecursionError) else err
        raise CheckpointError(
            f"{source} is not valid JSON ({problem}); the checkpoint is damaged."
        ) from err


def load_checkpoint(path: str | Path, *, with_training_state: bool = False) -> Checkpoint:
    folder = _locate(Path(path))
    card = read_card(folder)
    weights = _load_tensors(folder / WEIGHTS_FILE, path)
    state = meta = None
    if with_training_state:
        state_path = folder / STATE_FILE
        state = _load_tensors(state_path, path)
        from safetensors import safe_open

        with safe_open(str(state_path), framework="pt") as handle:
            meta = _parse_json((handle.metadata() or {}).get("training_meta", "{}"), state_path)
    return Checkpoint(folder, card, weights, state, meta)


def _load_tensors(file: Path, checkpoint: str | Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"Checkpoint {checkpoint} has no {file.name}; it is incomplete.")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{file} can't be read as safetensors ({err}); the checkpoint is damaged."
        ) from err


def load_state_strict(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: Path
) -> None:
    """Load ``prefix.*`` tensors into ``module``, naming any key or shape that disagrees."""
    part = {
        key[len(prefix) + 1 :]: value
        for key, value in tensors.items()
        if key.startswith(prefix + ".")
    }
    check_shapes({f"{prefix}.{key}": value.shape for key, value in module.state_dict().items()},
                 {f"{prefix}.{key}": value.shape for key, value in part.items()}, source)
    module.load_state_dict(part)


def check_shapes(expected: dict[str, Sequence[int]], found: dict[str, Sequence[int]],
                 source: Path) -> None:
    """Refuse weights ``found`` whose names or shapes differ from the nets' ``expected``."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: the weights in {WEIGHTS_FILE} don't match the nets its card describes "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); {MISMATCH}"
        )
    for key, shape in found.items():
        if tuple(shape) != tuple(expected[key]):
            raise CheckpointError(
                f"{source}: tensor {key} has shape {tuple(shape)} in {WEIGHTS_FILE} but "
                f"{tuple(expected[key])} in the net its card describes; {MISMATCH}"
            )


def optimizer_to_tensors(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser's state into safetensors-ready tensors and JSON-ready groups."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{name}"] = value.detach().clone()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, prefix: str
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
