"""The public API of the core: what the napari plugin, the Slicer module and the CLI call.

>>> from napari_medgan.core import api
>>> config = api.Config()
>>> config.data.paths = ["brain.nii.gz"]
>>> for event in api.train(config, "ckpt"):          # doctest: +SKIP
...     print(event.step, event.losses)
>>> volumes = api.synthesize(api.load_model("ckpt"), n=4, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from .card import require_model_fields
from .checkpoint import load_checkpoint, patch_affine, read_card
from .config import Config, Loss, load_config, save_config
from .data.dataset import load_training_volumes
from .data.io import (
    FORMATS,
    VolumeSource,
    check_volume,
    find_volume_files,
    is_dicom_series,
    read_volume,
    suffix_of,
    write_volume,
)
from .data.normalize import (
    IntensityNormalization,
    check_modality,
    denormalize,
    for_volume,
    normalize,
)
from .data.pairs import check_label_map, check_same_grid, match_pairs
from .data.patches import DevicePatchSampler
from .data.samples import SAMPLE_NAMES, sample_volume, write_sample
from .data.task_data import hole_mask
from .data.volume import Volume
from .device import device_choices, resolve_device
from .distributed import exit_process, is_main_process, launch_training
from .errors import CheckpointError, ConfigError, DataError
from .infer import sliding_window
from .output import check_output, size_on_disk
from .tasks.base import Task
from .tasks.registry import available_tasks, get_task_class
from .train import StopRequest, TrainEvent
from .train import train as _train
from .tstr import TSTR_STEPS, training_files

__all__ = [
    "LOSSES",
    "Config",
    "Model",
    "SAMPLE_NAMES",
    "TrainEvent",
    "Volume",
    "TaskInput",
    "TaskUse",
    "anomaly_score",
    "available_tasks",
    "check_output",
    "device_choices",
    "evaluate",
    "exit_process",
    "is_main_process",
    "is_volume_path",
    "launch_training",
    "load_config",
    "load_model",
    "read_card",
    "read_volume",
    "sample_volume",
    "save_config",
    "size_on_disk",
    "synthesize",
    "synthesize_pairs",
    "task_inputs",
    "task_use",
    "train",
    "training_inputs",
    "write_sample",
    "write_volume",
]

#: The loss names a config accepts, for the faces' menus.
LOSSES: tuple[str, ...] = get_args(Loss)
SYNTHESIS_BATCH = 16  # patches generated per forward pass


@dataclass
class Model:
    """A trained model ready for inference, with the card it was saved with."""

    path: Path
    card: dict[str, Any]
    task: Task
    normalizations: dict[str, IntensityNormalization]  # "image", and "target" if any

    @property
    def normalization(self) -> IntensityNormalization:
        """The input volumes' normalisation."""
        return self.normalizations["image"]

    @property
    def task_name(self) -> str:
        return self.card["task"]

    @property
    def patch_size(self) -> int:
        return self.card["patch_size"]

    @property
    def generates_labels(self) -> bool:
        """Whether :func:`synthesize_pairs` gives label maps with the patches."""
        return self.task.generates_labels


@dataclass(frozen=True)
class TaskInput:
    """One kind of volume a task trains on: its role, whether it must be given, what it is."""

    role: str  # "image", "target", "labels" or "mask" (the config's paths/targets/labels/masks)
    required: bool
    meaning: str


def task_inputs(task: str) -> list[TaskInput]:
    """The volumes ``task`` trains on, so a face shows only the pickers it needs."""
    needs = get_task_class(task).needs
    inputs = [TaskInput("image", True, "the volumes to learn from")]
    if needs.target == "paired":
        inputs.append(TaskInput("target", True, "one target per volume, on the volume's grid"))
    elif needs.target == "unpaired":
        inputs.append(TaskInput("target", True, "volumes of the other modality (unpaired)"))
    if needs.labels:
        inputs.append(TaskInput("labels", True, "one label map per volume"))
    elif needs.optional_labels:
        inputs.append(TaskInput("labels", False, "one label map per volume: new patches "
                                                 "come with their label maps"))
    if needs.masks == "holes":
        inputs.append(TaskInput("mask", False, "holes to fill (random holes if none)"))
    else:
        inputs.append(TaskInput("mask", False, "the region to take patches from"))
    return inputs


@dataclass(frozen=True)
class TaskUse:
    """How a trained model of a task is used, so a face offers the right widget and inputs."""

    synthesizes: bool  # api.synthesize makes new patches
    applies: bool  # api.apply maps a volume
    apply_inputs: tuple[str, ...]  # "image", and "mask" for inpainting
    output: str  # what apply gives: "intensity", "labels" or "map" (anomaly)
    reversible: bool  # apply(reverse=True) maps back (cycle)


def task_use(task: str) -> TaskUse:
    """What a model of ``task`` (a card's ``task``) does; ConfigError for an unknown task."""
    kind = get_task_class(task)
    return TaskUse(kind.can_synthesize, kind.can_apply, tuple(kind.apply_inputs), kind.output,
                   kind.reversible)


def train(
    config: Config,
    out: str | Path,
    *,
    stop: StopRequest = None,
    resume: str | Path | None = None,
    volumes: dict[str, list[Volume]] | None = None,
    overwrite: bool = False,
) -> Iterator[TrainEvent]:
    """Train and checkpoint into ``out``, yielding progress events; see :mod:`.train`.

    ``out`` is checked now, before any work (see :func:`check_output`): an existing
    checkpoint there is replaced only with ``overwrite``, or continued when ``resume``
    names it; the training data is never replaced. ``volumes``: volumes already open in
    a face (layers, nodes) by role: ``"image"``, ``"target"``, ``"labels"``, ``"mask"``; a
    role given here replaces the config's paths for that role, and the card's data
    summary names these volumes by their ``name``.
    """
    continuing = resume is not None and Path(resume).resolve() == Path(out).resolve()
    check_output(out, kind="checkpoint", overwrite=overwrite or continuing,
                 inputs=[*training_inputs(config), None if continuing else resume])
    return _train(config, out, stop=stop, resume=resume, volumes=volumes)


def training_inputs(config: Config) -> list[str]:
    """Every file and folder a training run reads: what its outputs must never replace."""
    data = config.data
    groups = (data.paths, data.masks, data.targets, data.labels)
    return [p for group in groups
            for p in ([group] if isinstance(group, (str, Path)) else group or ())]


def load_model(path: str | Path, *, device: str = "auto", expect_task: str | None = None) -> Model:
    """Rebuild the nets a checkpoint's card describes and load its weights (no unpickling)."""
    checkpoint = load_checkpoint(path)
    card = checkpoint.card  # checked against the card schema as it was read
    try:
        config = Config.from_dict(card["config"], source=f"the card of {path}")
        task_class = get_task_class(card["task"])
    except ConfigError as err:
        raise CheckpointError(f"Checkpoint {path} can't be used: {err}") from err
    if expect_task is not None and card["task"] != expect_task:
        raise CheckpointError(
            f"Checkpoint {path} holds a {card['task']!r} model; this needs a {expect_task!r} model."
        )
    require_model_fields(card, path, ("image", "target") if task_class.needs.target
                         else ("image",))
    task = task_class.restore(config, resolve_device(device), card.get("channels", 1),
                              card.get("num_classes", 0), checkpoint)
    task.label_values = [int(v) for v in card.get("label_values", task.label_values)]
    normalizations = {role: IntensityNormalization.from_dict(record)
                      for role, record in card["normalizations"].items()}
    return Model(checkpoint.path, card, task.eval(), normalizations)


def is_volume_path(path: str | Path) -> bool:
    """Whether :func:`read_volume` can try ``path``: a supported file or a DICOM series folder.

    Never raises (an unreadable folder is simply not a volume), so readers can ask first.
    """
    path = Path(path)
    try:
        if path.is_dir():
            return is_dicom_series(path)
        return path.is_file() and suffix_of(path) in FORMATS
    except OSError:
        return False


def _as_model(model: Model | str | Path) -> Model:
    return model if isinstance(model, Model) else load_model(model)


def _as_volume(volume: Volume | str | Path, what: str, model: Model) -> Volume:
    """A file is read; a face's volume (a layer, a node) is checked the same way."""
    loaded = volume if isinstance(volume, Volume) else _read(model, volume)
    if what == "input":  # a mask gets its own checks: see _mask_on_grid
        name = (volume.name or "the input volume") if isinstance(volume, Volume) else volume
        check_volume(loaded, f"{what} {name}")
    return loaded


def apply(
    model: Model | str | Path,
    volume: Volume | str | Path,
    *,
    mask: Volume | str | Path | None = None,
    overlap: float = 0.5,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    reverse: bool = False,
) -> Volume:
    """Run a conditional model over a whole volume of any size, by sliding window.

    The result has the input's exact shape and affine: intensities in the output
    modality's units (HU for CT), label maps as integer volumes. ``reverse``: a
    cycle model maps a volume of its B modality back to A.
    """
    model = _as_model(model)
    task = model.task
    if not task.can_apply:
        raise CheckpointError(
            f"Checkpoint {model.path} is a {model.task_name!r} model, which is not applied to "
            "volumes; use medgan synthesize."
        )
    problem = task.unready(model.card)
    if problem:
        raise CheckpointError(f"Checkpoint {model.path} can't be applied yet: {problem}.")
    source = volume if not isinstance(volume, Volume) else volume.name or "the input volume"
    volume = _as_volume(volume, "input", model)
    if volume.tensor.shape[0] != task.channels:
        raise DataError(
            f"{source} has {volume.tensor.shape[0]} channel(s) but the model of {model.path} "
            f"was trained on {task.channels}; give a volume like the training volumes."
        )
    if reverse and not task.reversible:
        raise ConfigError(f"A {model.task_name!r} model only maps one way; drop --reverse.")
    input_role, output_role = ("target", "image") if reverse else ("image", task.output_role)
    normalizations = model.normalizations
    check_modality(normalizations[input_role], volume.tensor, source)
    inputs = {input_role: normalize(normalizations[input_role], volume.tensor)}
    if "mask" in task.apply_inputs:
        if mask is None:
            raise DataError(f"The {model.task_name} model needs a mask of the region to fill.")
        inputs["mask"] = _mask_on_grid(_as_volume(mask, "mask", model), volume, mask, source)
    roles = list(inputs)
    sizes = [inputs[r].shape[0] for r in roles]

    def predict(batch: torch.Tensor) -> torch.Tensor:
        return task.predict(dict(zip(roles, batch.split(sizes, dim=1), strict=True)))

    stacked = inputs[roles[0]] if len(roles) == 1 else torch.cat([inputs[r] for r in roles])
    output = sliding_window(stacked, predict, model.patch_size,
                            overlap=overlap, batch_size=batch_size, device=task.device,
                            progress=progress, stop=stop)
    output = task.finish(output, inputs)
    if task.output == "labels":  # classes back to the label values of the training maps
        values = torch.tensor(task.label_values, device=output.device)
        output = values[output.argmax(0, keepdim=True)].to(_label_dtype(task.label_values))
    elif task.output == "intensity":
        norm = normalizations[output_role]
        if output_role == input_role:  # the input's modality: back into this volume's units
            norm = for_volume(norm, volume.tensor)
        output = denormalize(norm, output)
    if "mask" in inputs:  # outside the region, the input exactly (normalising clips intensities)
        output = torch.where(inputs["mask"] > 0, output, volume.tensor)
    return Volume(output, volume.affine, name=f"{volume.name}_{model.task_name}")


def _label_dtype(values: list[int]) -> torch.dtype:
    """The smallest integer type that holds every label value."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= min(values) and max(values) <= info.max:
            return dtype
    return torch.int64


def _read(model: Model, path: str | Path) -> Volume:
    """Read a volume as the model's training data was read (DICOM series handling)."""
    return read_volume(path, irregular_series=model.task.config.data.irregular_series)


def anomaly_score(anomaly_map: Volume) -> float:
    """One number for a whole volume from its anomaly map (from ``apply`` with an anomaly
    model): the mean of the map's highest 1 % of voxels, evaluate's ``score_volume``."""
    from .tasks.anomaly import volume_score

    return volume_score(anomaly_map.tensor[0])


def _mask_on_grid(mask: Volume, volume: Volume, mask_source, source) -> torch.Tensor:
    check_same_grid(mask, volume, mask_source, source, what="mask",
                    advice="resample it onto the volume first")
    return hole_mask(mask, mask_source)


def _require_synthesis(model: Model) -> None:
    if not model.task.can_synthesize:
        raise CheckpointError(
            f"Checkpoint {model.path} is a {model.task_name!r} model, which can't synthesize; "
            "train one with --task synthesis."
        )


def synthesize(model: Model | str | Path, n: int = 4, seed: int = 0) -> list[Volume]:
    """``n`` new patches in the training data's intensity units and voxel spacing."""
    return [image for image, _ in _synthesized(_as_model(model), n, seed, with_labels=False)]


def synthesize_pairs(model: Model | str | Path, n: int = 4,
                     seed: int = 0) -> list[tuple[Volume, Volume]]:
    """``n`` new (patch, label map) pairs from a synthesis model trained with label maps.

    The patches are those :func:`synthesize` gives for the same seed; each label map is
    an integer volume of the training maps' label values (0/255 stays 0/255) with its
    patch's shape and affine, named after the patch with ``_labels``.
    """
    model = _as_model(model)
    _require_synthesis(model)
    if not model.generates_labels:
        raise ConfigError(
            f"Checkpoint {model.path} was trained without label maps, so it makes patches "
            "only; use synthesize, or train with --labels to get image + label pairs."
        )
    return list(_synthesized(model, n, seed, with_labels=True))


def drawn_batches(model: Model, n: int, seed: int
                  ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """``n`` normalised patches (and class indices, from a model trained with labels) as
    ``(start, patches, classes)``, :data:`SYNTHESIS_BATCH` per forward pass; the batch
    starting at ``start`` is drawn with ``seed + start``, so a seed fixes every patch."""
    for start in range(0, n, SYNTHESIS_BATCH):
        count = min(SYNTHESIS_BATCH, n - start)
        yield start, *model.task.sample_pairs(count, seed=seed + start)


def _synthesized(model: Model, n: int, seed: int, *,
                 with_labels: bool) -> Iterator[tuple[Volume, Volume | None]]:
    """(patch, label map or None) pairs, drawn SYNTHESIS_BATCH at a time."""
    _require_synthesis(model)
    if n < 1:
        raise ConfigError(f"Asked for {n} volumes; ask for at least 1.")
    affine = patch_affine(model.card)
    values = torch.tensor(model.task.label_values or [0])
    dtype = _label_dtype(model.task.label_values or [0])
    for start, patches, classes in drawn_batches(model, n, seed):
        patches = denormalize(model.normalization, patches)
        for i, patch in enumerate(patches):
            name = f"synth_seed{seed}_{start + i:03d}"
            labels = None
            if with_labels:
                labels = Volume(values[classes[i].cpu()].to(dtype), affine, f"{name}_labels")
            yield Volume(patch.cpu(), affine, name=name), labels


def evaluate(
    model: Model | str | Path,
    data: list[VolumeSource],
    *,
    target: list[VolumeSource] | None = None,
    labels: list[VolumeSource] | None = None,
    mask: list[VolumeSource] | None = None,
    n: int = 64,
    seed: int = 0,
    overlap: float = 0.5,
    batch_size: int = 4,
    training: list[VolumeSource] | None = None,
    thorough: bool = False,
    tstr: bool = False,
    tstr_steps: int = TSTR_STEPS,
) -> dict[str, Any]:
    """How good a model is on held-out volumes ``data``.

    Every volume may be a path or a :class:`Volume` already in memory.
    Synthesis: quality and privacy of synthetic patches (see :func:`evaluate_synthesis`;
    ``training``: the volumes it learnt from, when they are not files named on its card;
    ``thorough``: a slower, surer realism test).
    ``tstr``: a synthesis model trained with labels also answers whether its pairs
    teach a segmenter (train on synthetic, test on real; see :mod:`.tstr`): ``data``
    files with their ``labels``; ``n`` pairs per training set, ``tstr_steps`` steps each.
    Other tasks: each volume is applied whole and scored against its truth (``target``,
    ``labels`` or ``mask`` files, matched by name or order); the report has the mean
    of each metric and the per-volume values.
    """
    model = _as_model(model)
    if tstr and tstr_steps < 1:
        raise ConfigError(f"TSTR trains each segmenter for at least 1 step, got "
                          f"tstr_steps={tstr_steps}; use --tstr-steps 1 or more (default "
                          f"{TSTR_STEPS}).")
    if tstr and not model.generates_labels:
        raise ConfigError(f"TSTR needs a synthesis model trained with label maps (--labels); "
                          f"{model.path} makes no label maps. Drop --tstr.")
    if model.task.can_synthesize:
        held_out = _held_out_pairs(model, data, labels) if tstr else None
        report = evaluate_synthesis(model, data, n=n, seed=seed, training=training,
                                    thorough=thorough)
        if held_out:
            from .tstr import tstr_report

            report["tstr"] = json_safe(tstr_report(model, *held_out, n=n, steps=tstr_steps,
                                                   seed=seed))
        return report
    given = {"target": target, "labels": labels, "mask": mask}
    files = find_volume_files(data)
    truths: dict[str, list[Path]] = {}
    for role in model.task.evaluate_truth:
        if not given[role]:
            raise DataError(f"Evaluating a {model.task_name} model needs the true {role} of each "
                            f"volume: give --{role} PATH ...")
        truths[role] = match_pairs(files, given[role], _TRUTH_WORDS[role]).partners
    per_volume = []
    for index, file in enumerate(files):
        truth = {role: _read(model, paths[index]) for role, paths in truths.items()}
        truth["input"] = _read(model, file)
        for role, paths in truths.items():  # the grid check of training
            check_same_grid(truth[role], truth["input"], paths[index], file,
                            what=_TRUTH_WORDS[role],
                            advice="resample it onto the volume")
        model.task.check_truth(truth)
        hole = truths["mask"][index] if "mask" in model.task.apply_inputs else None
        result = apply(model, truth["input"], mask=hole, overlap=overlap, batch_size=batch_size)
        per_volume.append({"file": str(file), **model.task.score(result, truth)})
    keys = [k for k in per_volume[0] if k != "file"]
    mean = {k: float(np.mean([v[k] for v in per_volume])) for k in keys}
    return json_safe({"task": model.task_name, "n_volumes": len(files), "mean": mean,
                      "volumes": per_volume, "notes": []})


def _held_out_pairs(model: Model, data: list[VolumeSource],
                    labels: list[VolumeSource] | None) -> tuple[list[Volume], list[Volume]]:
    """The held-out volumes and their label maps for TSTR, checked before any training."""
    if not labels:
        raise DataError("TSTR scores segmenters on the held-out volumes: give their label maps "
                        "with --labels PATH ...")
    training_files(model)  # refused now rather than after the synthesis evaluation
    files = find_volume_files(data)
    volumes, truths = [], []
    for file, partner in zip(files, match_pairs(files, labels, "label map").partners,
                             strict=True):
        volume, truth = _read(model, file), _read(model, partner)
        check_same_grid(truth, volume, partner, file, what="label map",
                        advice="resample it onto the volume")
        check_label_map(truth, str(partner))
        unknown = sorted(set(truth.tensor.unique().long().tolist()) - set(model.task.label_values))
        if unknown:
            raise DataError(f"The label map {partner} holds label {unknown[0]}, but the model "
                            f"draws only label values {model.task.label_values}; give label "
                            "maps with the labels it was trained on.")
        volumes.append(volume)
        truths.append(truth)
    return volumes, truths


MIN_EVALUATION_PATCHES = 4  # the fewest the quality metrics can compare
_TRUTH_WORDS = {"target": "target", "labels": "label map", "mask": "mask"}  # in messages


def evaluate_synthesis(model: Model, data: list[VolumeSource], *, n: int = 64,
                       seed: int = 0, training: list[VolumeSource] | None = None,
                       thorough: bool = False) -> dict[str, Any]:
    """Quality, realism and privacy numbers of a synthesis model against held-out ``data``.

    Patches are centred on foreground voxels (above the lowest 5 % of the
    normalised range), so empty background doesn't make every set look alike.
    Realism first: the classifier two-sample test (:func:`realism.c2st`) of ``n``
    synthetic patches against ``n`` real ones of the training region
    (``c2st_auc_vs_training``) and of the held-out volumes (``c2st_auc_vs_held_out``),
    next to its yardstick ``c2st_auc_real_vs_real``: two disjoint sets of ``n`` held-out
    patches under the same protocol. ``thorough`` uses 4× the patches (and so 4× the
    classifier's training steps). The training region and the memorisation report need
    the training volumes: ``training``, or else the files named on the card, sampled
    inside the masks it was trained with (see :func:`_training_region`); when neither is
    there they are left out and ``notes`` says so.
    """
    from . import metrics, realism

    if n < MIN_EVALUATION_PATCHES:  # the metrics' own refusal can't name the setting
        raise ConfigError(f"Evaluation needs at least {MIN_EVALUATION_PATCHES} patches per set, "
                          f"got n={n}; use --n {MIN_EVALUATION_PATCHES} or more (default 64).")
    n_c2st = 4 * n if thorough else n
    folds = min(5, n_c2st)
    synthetic, background_share = _foreground_centred_samples(model, n_c2st, seed)
    (held_out,) = _foreground_patches(model, data, [(2 * n_c2st, seed + 1)])
    notes = []
    if background_share:
        notes.append(f"{background_share:.0%} of the synthetic patches drawn had background at "
                     "their centre and were set aside, as real patches are centred on "
                     "tissue (a model trained on patches anywhere, or with labels, draws "
                     "some)")
    training, training_masks = _training_region(model, training)
    pairs = {"vs_held_out": (held_out[:n_c2st], synthetic),
             "real_vs_real": (held_out[:n_c2st], held_out[n_c2st:])}  # the yardstick
    training_patches = training_fresh = None
    if training:
        # patches of the training region, and new ones: the memorisation share's reference
        training_patches, training_fresh = _foreground_patches(
            model, training, [(max(4 * n, 256, n_c2st), seed + 2), (n, seed + 3)],
            masks=training_masks)
        pairs = {"vs_training": (training_patches[:n_c2st], synthetic), **pairs}
    else:
        notes.append("realism against the training region and memorisation left out: the "
                      "training files named on the card are not on disk")
    tests = {name: realism.c2st(real, other, folds=folds, seed=seed)
             for name, (real, other) in pairs.items()}
    report: dict[str, Any] = {f"c2st_auc_{name}": t["auc"] for name, t in tests.items()}
    report.update({f"c2st_p_value_{name}": t["p_value"] for name, t in tests.items()
                   if name != "real_vs_real"})
    report.update(c2st_patches_per_set=n_c2st, c2st_epochs=tests["vs_held_out"]["epochs"])
    report.update(metrics.synthesis_report(synthetic[:n], held_out[:n], training_patches,
                                           training_fresh))
    report.update(n_synthetic=n, synthetic_background_share=background_share,
                  held_out_files=[str(p) for p in data], notes=notes)
    return json_safe(report)


def json_safe(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` as strict JSON allows: NaN and infinities become None, each with a note.

    An infinite HD95 (a label missing from the result) or a ratio over zero is a real
    outcome, not an error; the note keeps what the number was.
    """
    notes = list(report.get("notes", []))

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{where} is {value} (not a JSON number): reported as null")
            return None
        return value

    cleaned = clean({k: v for k, v in report.items() if k != "notes"}, "")
    cleaned["notes"] = notes
    return cleaned


def _training_region(model: Model, training: list[VolumeSource] | None
                     ) -> tuple[list[VolumeSource], list[str] | None]:
    """The volumes a synthesis model learnt from and the masks it drew its patches in.

    ``training`` given: those volumes, whole. Otherwise the card's files and masks, those
    still on disk (the masks only when all of them are), so the real patches come from
    where the generator's did.
    """
    if training:
        return training, None
    summary = model.card.get("data", {})
    files = [f for f in summary.get("files", []) if Path(f).exists()]
    masks = summary.get("masks") or None
    if not files or len(files) != len(summary.get("files", [])):
        return files, None
    return files, masks if masks and all(Path(m).exists() for m in masks) else None


#: draws of n synthetic patches, at most, to find n centred on foreground
MAX_SYNTHETIC_DRAWS = 16
REDRAW_SEED_STEP = 10_007  # the k-th further draw's noise seed: seed + k · this


def _foreground_centred_samples(model: Model, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """``n`` normalised synthetic patches whose centre voxel is foreground, and the share
    of those drawn that were not.

    The real patches are centred on foreground; synthetic ones centred on background
    (drawn by a model trained on patches anywhere in its volumes, or with labels) would
    tell the sets apart by that alone, and raise MMD (0.21 against 0.06 for the image +
    label model of bench/README.md). The first draw is ``sample(n, seed)``, so a model
    whose patches all have tissue at their centre is evaluated on exactly those."""
    from . import metrics

    centre = model.patch_size // 2
    kept, drawn, found = [], 0, 0
    for k in range(MAX_SYNTHETIC_DRAWS):
        patches = model.task.sample(n, seed=seed + k * REDRAW_SEED_STEP).cpu()
        kept.append(patches[patches[:, 0, centre, centre, centre] > metrics.FOREGROUND_ABOVE])
        drawn, found = drawn + n, found + len(kept[-1])
        if found >= n:
            return torch.cat(kept)[:n], (drawn - found) / drawn
    raise DataError(
        f"Of {drawn} patches the model drew, {found} have tissue at their centre (above "
        f"{metrics.FOREGROUND_ABOVE} normalised), fewer than the {n} the evaluation compares "
        "with real patches centred on tissue: it draws mostly background. Train it longer, "
        "or with a --mask that keeps its patches in tissue."
    )


def _foreground_patches(model: Model, paths: list, draws: list[tuple[int, int]],
                        masks: list[str] | None = None) -> list[torch.Tensor]:
    """Normalised patches centred on foreground (inside ``masks`` when given): one batch
    of ``n`` per ``(n, seed)`` of ``draws``, from volumes read once."""
    from . import metrics

    data = load_training_volumes(paths, patch_size=model.patch_size, masks=masks,
                                 irregular_series=model.task.config.data.irregular_series)
    volumes = [normalize(model.normalization, v.tensor) for v in data.volumes]
    regions = [(v[:1] > metrics.FOREGROUND_ABOVE) for v in volumes]
    if data.masks:
        regions = [r & m for r, m in zip(regions, data.masks, strict=True)]
    if not all(bool(r.any()) for r in regions):
        raise DataError(
            f"One of {', '.join(map(str, paths))} has no foreground to take patches from."
        )
    return [DevicePatchSampler(volumes, model.patch_size, n, device=torch.device("cpu"),
                               seed=seed, masks=regions).next_batch() for n, seed in draws]
