"""Intensity normalisation: map voxel values to [-1, 1] for the nets, and back.

CT has physical units (Hounsfield units), so one fixed window serves every volume and
synthesized CT comes back in HU. MR intensities are arbitrary per scan, so each volume
is scaled by its own percentiles; the mean percentile values of the training set are
kept to map synthesized MR back to the training data's typical range.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import torch

from ..errors import CheckpointError, ConfigError, DataError, MedGANWarning
from ..schema import Range, SchemaViolation, conform

#: torch.quantile refuses inputs above 2**24 elements; a random subsample this big pins
#: percentiles to about 1e-4 of the distribution, far below what normalisation needs.
_QUANTILE_SAMPLE = 1 << 20
#: Below this 0.5th percentile a volume holds air in HU (about -1000): it is CT.
_AIR_HU = -500.0
#: CT whose tissue spans less of the window than this share: its contrast is all but lost
#: (the brain-only ``ct_head`` atlas spans 3 % of -1000...1000 HU; bench/README.md)
_NARROW_SHARE = 0.05


@dataclass
class IntensityNormalization:
    """How intensities were mapped to [-1, 1]; saved in the checkpoint card.

    ``modality`` is ``"ct"`` (``low``/``high``: the HU window) or ``"mr"`` (``low``/``high``:
    the mean per-volume values at ``percentiles``, used only to map outputs back).
    """

    modality: str
    low: float
    high: float
    percentiles: tuple[float, float] = (0.5, 99.5)

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "low": self.low, "high": self.high,
                "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IntensityNormalization:
        try:
            return cls(**conform(raw, NormalizationRecord, "the record", RECORD_RANGES))
        except SchemaViolation as err:
            raise CheckpointError(
                f"An intensity normalisation record is incomplete or malformed: {err} "
                "The checkpoint card may be damaged."
            ) from None


class _RecordFields(TypedDict):
    modality: Literal["ct", "mr"]
    low: float
    high: float


class NormalizationRecord(_RecordFields, total=False):
    """:meth:`IntensityNormalization.to_dict` as the card holds it."""

    percentiles: tuple[float, float]


RECORD_RANGES = {(NormalizationRecord, "percentiles"): Range(0, 100)}


def percentiles(tensor: torch.Tensor, q: Sequence[float]) -> list[float]:
    """Percentiles ``q`` (0-100) of ``tensor``, from a fixed random subsample if it is large."""
    flat = tensor.detach().reshape(-1).float()
    if flat.numel() > _QUANTILE_SAMPLE:
        generator = torch.Generator(device=flat.device).manual_seed(0)
        flat = flat[torch.randint(flat.numel(), (_QUANTILE_SAMPLE,), generator=generator,
                                  device=flat.device)]
    qs = torch.tensor([p / 100 for p in q], device=flat.device)
    return [float(v) for v in torch.quantile(flat, qs)]


def detect_modality(tensors: Sequence[torch.Tensor]) -> str:
    """Guess ``"ct"`` or ``"mr"`` from intensities alone.

    A volume looks like CT when its 0.5th percentile is below -500 (air in HU), or when
    its values are whole numbers with some below 0: CT stores signed integer HU, and even
    a brain-windowed CT with air set to 0 (like the ``ct_head`` sample, -30...385 HU)
    keeps a few negative voxels, while MR magnitudes are never negative and processed MR
    is stored as floats. Limits: a CT cropped or shifted so that no value is negative
    reads as MR, and signed-integer MR (phase maps) reads as CT; set the modality
    explicitly then.
    """
    if not tensors:
        raise DataError("No volumes were given to detect the modality from.")
    votes = {_looks_like_ct(t) for t in tensors}
    if len(votes) > 1:
        raise DataError(
            "The volumes look like a mix of CT and MR; set the modality ('ct' or 'mr') "
            "explicitly instead of 'auto'."
        )
    return "ct" if votes.pop() else "mr"


def _looks_like_ct(tensor: torch.Tensor) -> bool:
    if percentiles(tensor, [0.5])[0] < _AIR_HU:
        return True
    return bool(tensor.min() < 0) and bool(torch.equal(tensor, tensor.round()))


def check_modality(norm: IntensityNormalization, tensor: torch.Tensor, source: object) -> None:
    """Refuse a volume that plainly is not of the modality a model was trained on.

    Only unambiguous evidence counts, so a correct input is never refused: air in HU
    (0.5th percentile below -500) given to an MR model, or non-negative fractional
    intensities (no HU at all) given to a CT model.
    """
    if norm.modality == "mr" and percentiles(tensor, [0.5])[0] < _AIR_HU:
        found = "CT (air below -500 HU)"
    elif norm.modality == "ct" and tensor.min() >= 0 and not torch.equal(tensor, tensor.round()):
        found = "MR (no Hounsfield units: non-negative, fractional intensities)"
    else:
        return
    expected = ("CT in HU" if norm.modality == "ct" else "MR") + f" ({norm.to_dict()})"
    raise DataError(f"{source} looks like {found}, but the model was trained on {expected}; "
                    "give a volume of that modality, or train a model for this one.")


def fit_normalization(
    tensors: Sequence[torch.Tensor],
    modality: str = "auto",
    ct_window: tuple[float, float] = (-1000.0, 1000.0),
    mr_percentiles: tuple[float, float] = (0.5, 99.5),
) -> IntensityNormalization:
    """Choose the normalisation for a training set (``modality``: "auto", "ct" or "mr")."""
    if modality not in ("auto", "ct", "mr"):
        raise ConfigError(f"modality is {modality!r}; choose one of auto, ct, mr.")
    if modality == "auto":
        modality = detect_modality(tensors)
    if modality == "ct":
        low, high = (float(v) for v in ct_window)
        _warn_if_narrow(tensors, low, high)
    else:
        if not tensors:
            raise DataError("No volumes were given to fit the MR normalisation to.")
        values = [_mr_range(t, mr_percentiles) for t in tensors]
        low = sum(v[0] for v in values) / len(values)
        high = sum(v[1] for v in values) / len(values)
    return IntensityNormalization(modality, low, high, tuple(float(p) for p in mr_percentiles))


def _warn_if_narrow(tensors: Sequence[torch.Tensor], low: float, high: float) -> None:
    """Warn when the CT voxels inside the window (air below it left out) use only a sliver
    of it: the nets then see the tissue's contrast as differences of a few hundredths, and
    the generator's small errors (speckle) as large as the anatomy (bench/README.md)."""
    inside = [flat[flat > low] for flat in (t.reshape(-1)[::max(1, t.numel() // _QUANTILE_SAMPLE)]
                                            for t in tensors)]
    spans = [percentiles(voxels, [1, 99]) for voxels in inside if len(voxels)]
    if not spans:
        return
    lowest, highest = min(s[0] for s in spans), max(s[1] for s in spans)
    share = (highest - lowest) / (high - low)
    if 0 < share < _NARROW_SHARE:  # 0: no contrast at all, no window to suggest
        warnings.warn(
            f"The CT volumes' tissue (1st to 99th percentile: {lowest:.0f} to {highest:.0f} "
            f"HU) spans only {share:.0%} of data.ct_window ({low:.0f}, {high:.0f}) HU, so "
            "the model sees little of its contrast; set data.ct_window to the tissue's "
            f"window (for example {lowest:.0f}, {highest:.0f}; brain: 0, 80).",
            MedGANWarning, stacklevel=3)


def normalize(norm: IntensityNormalization, tensor: torch.Tensor) -> torch.Tensor:
    """Map one volume's intensities linearly to [-1, 1], clipping what falls outside."""
    if norm.modality == "ct":
        low, high = norm.low, norm.high
    else:
        low, high = _mr_range(tensor, norm.percentiles)
    return ((tensor.float() - low) / (high - low) * 2 - 1).clamp(-1, 1)


def for_volume(norm: IntensityNormalization, tensor: torch.Tensor) -> IntensityNormalization:
    """The normalisation of one MR volume: its own percentile range instead of the mean one.

    Output in the input's modality (inpainting) must go back into that volume's units,
    which differ from the training set's when the scanner or scaling differ.
    """
    if norm.modality != "mr":
        return norm
    low, high = _mr_range(tensor, norm.percentiles)
    return IntensityNormalization(norm.modality, low, high, norm.percentiles)


def denormalize(norm: IntensityNormalization, tensor: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] back to the training data's units (HU for CT)."""
    return (tensor.float() + 1) / 2 * (norm.high - norm.low) + norm.low


def _mr_range(tensor: torch.Tensor, q: tuple[float, float]) -> tuple[float, float]:
    """The volume's percentile values; its min and max if those coincide (mostly background)."""
    low, high = percentiles(tensor, q)
    if high <= low:
        low, high = float(tensor.min()), float(tensor.max())
    if high <= low:
        raise DataError(f"A constant volume (every voxel {low:g}) can't be normalised.")
    return low, high
