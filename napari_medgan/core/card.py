"""The checkpoint card's schema: what each field holds, checked once, where a card is read.

A card is JSON that anyone can edit or damage, and the faces list cards the user picks
by hand. :func:`check_card` checks the type, shape and range of every field it knows
(the embedded config through :meth:`Config.from_dict`), so the code that reads a card
can trust it. Fields it does not know pass untouched. Whether the weights fit the nets
the card describes is checked when the nets are built (:meth:`Task.restore`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np

from .config import Config
from .data.normalize import RECORD_RANGES, NormalizationRecord
from .errors import CheckpointError, ConfigError
from .schema import Range, SchemaViolation, conform

FORMAT_VERSION = 1
Vector3 = tuple[float, float, float]

NetRecord = TypedDict("NetRecord", {"class": str, "parameters": int})


class DataSummary(TypedDict, total=False):
    """What the model was trained on (``TaskData.summary``)."""

    files: list[str]
    masks: list[str] | None
    target_files: list[str]
    label_files: list[str]
    mask_files: list[str]
    shapes: list[tuple[int, int, int]]
    spacings: list[Vector3]
    resampled: list[str]


class _Head(TypedDict):
    """What every card holds."""

    format_version: int
    task: str
    config: dict[str, Any]
    step: int


class Card(_Head, total=False):
    """A card as training writes it (``train._card``)."""

    package: str
    version: str
    created: str
    nets: dict[str, NetRecord]
    patch_size: int
    channels: int
    num_classes: int
    label_values: list[int]
    spacing: Vector3
    direction: tuple[Vector3, Vector3, Vector3]
    normalizations: dict[str, NormalizationRecord]
    modality: Literal["ct", "mr"]
    data: DataSummary
    seed: int
    loss_history: dict[str, list[float]]
    # image + label pairs (#10): a synthesis model that draws label maps with its patches
    generates_labels: bool
    class_names: list[str]
    # distributed training (#11): how many processes shared the global batch
    processes: int


#: what a card needs for its model to be loaded (api.load_model)
MODEL_FIELDS = ("patch_size", "spacing", "direction", "normalizations")

RANGES = {
    (Card, "format_version"): Range(1),
    (Card, "step"): Range(0),
    (Card, "patch_size"): Range(1),
    (Card, "channels"): Range(1),
    (Card, "num_classes"): Range(0),
    (Card, "label_values"): Range(0),
    (Card, "spacing"): Range(0, low_inclusive=False),
    (Card, "seed"): Range(0),
    (Card, "processes"): Range(1),  # distributed training (#11)
    (NetRecord, "parameters"): Range(0),
    (DataSummary, "shapes"): Range(1),
    (DataSummary, "spacings"): Range(0, low_inclusive=False),
    **RECORD_RANGES,
}


def check_card(raw: Any, card_path: Path) -> dict[str, Any]:
    """``raw`` (parsed JSON) as a checked card, its config filled in with the defaults."""
    missing = [key for key in Card.__required_keys__ if not isinstance(raw, dict)
               or key not in raw]
    if missing:
        raise CheckpointError(
            f"{card_path} lacks {', '.join(sorted(missing))}; it is not a medgan checkpoint card."
        )
    version = raw["format_version"]
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{card_path.parent} was written by a newer napari-medgan (format {version}); "
            "upgrade to load it."
        )
    try:
        card = conform(raw, Card, "", RANGES)
        config = Config.from_dict(_as_trained(card["config"]), source="config")
        _check_consistency(card, config)
    except (SchemaViolation, ConfigError) as err:
        raise CheckpointError(
            f"{card_path} is damaged or was edited: {err} Restore the card that training wrote."
        ) from None
    card["config"] = config.to_dict()
    return card


# model fields whose default changed after cards were written without them: the value
# such a card's nets were built with (one level of local critic before local_d_layers,
# none before local_d_channels; the DCGAN nets' sizes before 2026-12-05)
EARLIER_MODEL_DEFAULTS = {"local_d_layers": 1, "local_d_channels": 0, "latent_dim": 128,
                          "g_channels": 32, "d_channels": 32, "max_channels": 256,
                          "upsample": "transpose"}


def _as_trained(config: Any) -> Any:
    """A card's config with the fields it predates set as its nets were built."""
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return config
    return {**config, "model": {**EARLIER_MODEL_DEFAULTS, **model}}


def require_model_fields(card: dict[str, Any], path: str | Path,
                         roles: tuple[str, ...]) -> None:
    """Refuse a card that lacks what loading its model needs: ``roles``' normalisations too."""
    missing = [key for key in MODEL_FIELDS if key not in card]
    missing += [f"normalizations.{role}" for role in roles
                if role not in card.get("normalizations", {})]
    if missing:
        raise CheckpointError(
            f"The card of checkpoint {path} lacks {', '.join(missing)}; it describes no "
            "loadable model. Restore the card that training wrote."
        )


def _check_consistency(card: dict[str, Any], config: Config) -> None:
    if "patch_size" in card and card["patch_size"] != config.model.patch_size:
        raise SchemaViolation(
            f"patch_size is {card['patch_size']} but config.model.patch_size is "
            f"{config.model.patch_size}."
        )
    values = card.get("label_values")
    if values is not None and (values != sorted(set(values))
                               or len(values) != card.get("num_classes", len(values))):
        raise SchemaViolation(
            f"label_values {values} must be {card.get('num_classes', 'the')} different label "
            "values in increasing order, one per class (num_classes)."
        )
    if card.get("generates_labels") and (card["task"] != "synthesis"
                                         or card.get("num_classes", 0) < 2):
        raise SchemaViolation("generates_labels is true, but only a synthesis model with "
                              "num_classes of at least 2 draws label maps.")
    names = card.get("class_names")
    if names is not None and len(names) != card.get("num_classes", 0):
        raise SchemaViolation(f"class_names has {len(names)} names but num_classes is "
                              f"{card.get('num_classes', 0)}; give one name per class.")
    if "direction" in card and abs(np.linalg.det(np.asarray(card["direction"]))) < 1e-6:
        raise SchemaViolation("direction is not an invertible 3×3 matrix of axis directions.")
    for role, record in card.get("normalizations", {}).items():
        if not record["low"] < record["high"]:
            raise SchemaViolation(
                f"normalizations.{role} has low {record['low']} not below high {record['high']}."
            )
