"""Everything a task trains on, checked, normalised and ready to be cut into patches.

Each task says what it needs (:class:`TaskNeeds`); this module reads the volumes and
their partners (paired targets, label maps, hole masks), fits one intensity
normalisation per modality, and :class:`BatchSource` turns them into batches of named
patches. Paired partners are stacked as channels of their volume, so one sampler
cuts them at the same place; an unpaired target set gets a sampler of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..distributed import World
from ..errors import ConfigError, DataError
from ..speed import pin_host_batches
from .dataset import load_training_volumes
from .io import check_volume
from .normalize import IntensityNormalization, fit_normalization, normalize
from .pairs import check_label_map, label_values, load_partner, match_pairs, to_classes
from .patches import make_patch_sampler
from .volume import Volume

ROLE_ORDER = ("image", "target", "labels", "mask")


@dataclass(frozen=True)
class TaskNeeds:
    """What a task trains on besides its volumes."""

    target: str | None = None  # "paired" (same grid as each volume) or "unpaired" (a set)
    labels: bool = False  # one label map per volume
    masks: str = "sampling"  # what --mask gives: the "sampling" region, or "holes" to fill
    # image + label pairs (#10): label maps may be given, and are then learnt too
    optional_labels: bool = False


@dataclass
class TaskData:
    roles: dict[str, list[torch.Tensor]]  # role → one (C, D, H, W) tensor per volume
    affines: dict[str, list[Any]]
    sampling_masks: list[torch.Tensor] | None
    normalizations: dict[str, IntensityNormalization]
    summary: dict[str, Any]
    reference: Volume  # the first volume: its spacing and axes describe the model's patches
    label_values: list[int] = field(default_factory=list)  # class k is label value k
    mask_share: float = 1.0  # share of patches centred in sampling_masks

    @property
    def num_classes(self) -> int:
        return len(self.label_values)


def load_task_data(config: Config, needs: TaskNeeds,
                   saved: dict[str, IntensityNormalization] | None = None,
                   volumes: dict[str, list[Volume]] | None = None) -> TaskData:
    """Read and check the training data of ``config`` for a task with ``needs``.

    ``saved``: the normalisations of a checkpoint being resumed, used instead of fitting.
    ``volumes``: in-memory volumes by role (see :data:`ROLE_ORDER`); a role given here
    replaces the config's paths for that role.
    """
    d, patch = config.data, config.model.patch_size
    given = _sources(config, volumes or {})
    sampling = given["mask"] if given["mask"] and needs.masks == "sampling" else None
    images = load_training_volumes(given["image"], patch_size=patch, masks=sampling,
                                   spacing_mismatch=d.spacing_mismatch,
                                   irregular_series=d.irregular_series)
    files = [Path(f) for f in images.summary["files"]]
    resampled = set(images.summary["resampled"])
    raw = {"image": [v.tensor for v in images.volumes]}
    affines = {"image": [v.affine for v in images.volumes]}
    summary = dict(images.summary, pairs=dict(images.summary["pairs"]))

    def partners(paths, what: str, key: str, check, nearest: bool = False) -> list[Volume]:
        pairing = match_pairs(files, paths, what)
        summary[key] = [str(p) for p in pairing.partners]
        summary["pairs"][key] = pairing.record()
        return [load_partner(p, image, f, what=what, check=check, nearest=nearest,
                             follow=str(f) in resampled, resample=d.resample_pairs,
                             irregular_series=d.irregular_series)
                for p, image, f in zip(pairing.partners, images.volumes, files, strict=True)]

    if needs.target and not given["target"]:
        raise DataError(f"The {config.task} task needs target volumes: give --target PATH ...")
    if needs.target == "paired":
        raw["target"] = [v.tensor for v in partners(given["target"], "target", "target_files",
                                                    check_volume)]
    elif needs.target == "unpaired":
        targets = load_training_volumes(given["target"], patch_size=patch,
                                        spacing_mismatch=d.spacing_mismatch,
                                        irregular_series=d.irregular_series)
        raw["target"] = [v.tensor for v in targets.volumes]
        affines["target"] = [v.affine for v in targets.volumes]
        summary["target_files"] = targets.summary["files"]
    values: list[int] = []
    with_labels = needs.labels or (needs.optional_labels and bool(given["labels"]))
    if with_labels:
        if not given["labels"]:
            raise DataError(f"The {config.task} task needs label maps: give --labels PATH ...")
        label_maps = partners(given["labels"], "label map", "label_files", check_label_map,
                              nearest=True)
        for volume, path in zip(label_maps, summary["label_files"], strict=True):
            if not bool((volume.tensor > 0).any()):
                raise DataError(f"The label map {path} is empty (only background); give "
                                "label maps with labelled voxels (1, 2, ...) to learn from.")
        values = label_values(label_maps)
        raw["labels"] = [to_classes(v.tensor, values) for v in label_maps]
    if needs.masks == "holes" and given["mask"]:
        holes = partners(given["mask"], "mask", "mask_files", hole_mask, nearest=True)
        raw["mask"] = [hole_mask(v, p) for v, p in zip(holes, summary["mask_files"], strict=True)]

    normalizations = saved or {}
    if not saved:
        normalizations["image"] = fit_normalization(raw["image"], d.modality, d.ct_window,
                                                    d.mr_percentiles)
        if "target" in raw:
            normalizations["target"] = fit_normalization(raw["target"], d.target_modality,
                                                         d.ct_window, d.mr_percentiles)
    roles = {role: [normalize(normalizations[role], t) for t in tensors]
             if role in normalizations else tensors for role, tensors in raw.items()}
    sampling_masks, mask_share = images.masks, 1.0  # a --mask places every patch
    if with_labels and images.masks is None:  # else label_share of them are centred on
        sampling_masks = [labels > 0 for labels in raw["labels"]]  # labelled voxels, so
        mask_share = d.label_share  # small structures are seen, and the rest anywhere
    elif "mask" in raw:  # patches centred on holes
        sampling_masks = [mask > 0 for mask in raw["mask"]]
    return TaskData(roles, affines, sampling_masks, normalizations, summary,
                    images.volumes[0], values, mask_share)


def _sources(config: Config, volumes: dict[str, list[Volume]]) -> dict[str, list]:
    """What each role trains on: the config's paths, or the volumes given for that role."""
    d = config.data
    sources: dict[str, list] = {"image": d.paths, "target": d.targets, "labels": d.labels,
                                "mask": d.masks}
    unknown = sorted(set(volumes) - set(sources))
    if unknown:
        raise ConfigError(f"Volumes were given for {', '.join(unknown)}; the roles are "
                          f"{', '.join(ROLE_ORDER)}.")
    sources.update({role: list(given) for role, given in volumes.items() if given})
    return sources


def hole_mask(volume: Volume, source: object) -> torch.Tensor:
    """The region to fill as a 0/1 ``(1, D, H, W)`` tensor; it must leave something around it.

    The one rule for hole masks, in training and in apply: whole numbers, 0 to keep and
    anything above 0 to fill. A soft mask (probabilities) is refused rather than cut at
    an arbitrary threshold.
    """
    values = volume.tensor[:1]
    if not torch.isfinite(values).all() or not torch.equal(values, values.round()) \
            or bool((values < 0).any()):
        raise DataError(f"The mask {source} holds values other than whole numbers >= 0 (a soft "
                        "or probability mask?); a hole mask is 0 to keep and 1 (or any whole "
                        "number above 0) to fill: threshold it first, e.g. mask > 0.5.")
    mask = (values > 0).float()
    if not bool(mask.any()):
        raise DataError(f"The mask {source} is empty: it marks no region to fill.")
    if bool(mask.all()):
        raise DataError(f"The mask {source} covers the whole volume: nothing is left to fill "
                        "the hole from.")
    return mask


class BatchSource:
    """Named patch batches for a task: ``{"image": (B, C, p, p, p), "target": ..., ...}``."""

    def __init__(self, data: TaskData, config: Config, device: torch.device,
                 world: World | None = None) -> None:
        world = world or World(device=device)
        d, p, seed = config.data, config.model.patch_size, config.train.seed
        b = world.per_process(config.train.batch_size)
        options = dict(samples_per_volume=d.samples_per_volume, queue_length=d.queue_length,
                       pin_memory=pin_host_batches(config, device), world=world)
        stacked = [role for role in ROLE_ORDER if role in data.roles
                   and not (role == "target" and "target" in data.affines)]
        self.split = [(role, data.roles[role][0].shape[0]) for role in stacked]
        volumes = [torch.cat(parts) for parts in zip(*(data.roles[r] for r in stacked),
                                                      strict=True)]
        self.samplers = {"image": make_patch_sampler(
            d.sampler, volumes, p, b, affines=data.affines["image"], device=device, seed=seed,
            masks=data.sampling_masks, mask_share=data.mask_share, **options)}
        if "target" in data.affines:  # an unpaired set: cut independently
            self.samplers["target"] = make_patch_sampler(
                d.sampler, data.roles["target"], p, b, affines=data.affines["target"],
                device=device, seed=seed + 1, **options)

    def __call__(self) -> dict[str, torch.Tensor]:
        batch = self.samplers["image"].next_batch()
        named, start = {}, 0
        for role, channels in self.split:
            named[role] = batch[:, start:start + channels]
            start += channels
        if "target" in self.samplers:
            named["target"] = self.samplers["target"].next_batch()
        return named

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value for name, sampler in self.samplers.items()
                for key, value in sampler.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, sampler in self.samplers.items():
            sampler.load_state_dict({k[len(name) + 1:]: v for k, v in state.items()
                                     if k.startswith(name + ".")})
