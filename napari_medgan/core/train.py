"""The training loop, as a generator of events.

Faces drive it the same way: napari in a ``thread_worker``, Slicer through
``medgan train --events jsonl``, the CLI with a progress bar. Each event says
where training is; a ``stop`` request ends it at the next step with a checkpoint.
"""

from __future__ import annotations

import datetime
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .checkpoint import load_checkpoint, patch_affine, save_checkpoint
from .config import Config
from .data.normalize import IntensityNormalization, denormalize
from .data.task_data import BatchSource, TaskData, load_task_data
from .data.volume import Volume
from .device import out_of_memory_advice, resolve_device
from .distributed import World, join
from .errors import ConfigError, MedGANWarning, OutputError, TrainingError
from .memory import check_memory, plan_memory
from .output import probe
from .speed import compile_nets, set_cudnn_benchmark
from .tasks.base import Task
from .tasks.registry import get_task_class

StopRequest = Callable[[], bool] | threading.Event | None
HISTORY_POINTS = 2000  # the card keeps at most this many loss-history points
CARD_ROOM = 256 * 1024  # bytes for card.json and the training state's small tensors


@dataclass
class TrainEvent:
    """One report from training. ``kind``: ``start``, ``step``, ``done`` or ``stopped``."""

    kind: str
    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    steps_per_s: float = 0.0
    eta_s: float = 0.0
    preview: Volume | None = None
    checkpoint: str | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields; the preview volume is left to the face to store."""
        return {
            "event": self.kind,
            "step": self.step,
            "total": self.total,
            "losses": self.losses,
            "steps_per_s": round(self.steps_per_s, 4),
            "eta_s": round(self.eta_s, 2),
            "preview": self.preview is not None,
            "checkpoint": self.checkpoint,
            "message": self.message,
        }


def _stop_requested(stop: StopRequest) -> bool:
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def train(
    config: Config,
    out: str | Path,
    *,
    stop: StopRequest = None,
    resume: str | Path | None = None,
    volumes: dict[str, list[Volume]] | None = None,
) -> Iterator[TrainEvent]:
    """Train ``config.task``, checkpointing into ``out``; yields a :class:`TrainEvent` per step.

    With ``resume``, weights, optimiser states, step and random streams continue from
    that checkpoint; ``config.train.steps`` is the new total. ``volumes``: volumes already
    in memory by role ("image", "target", "labels", "mask"), used instead of the
    config's paths for those roles; the card names them by their ``name``.
    """
    config.validate()
    world = join(resolve_device(config.train.device))  # torchrun's processes, else one
    device = world.device
    resumed = _load_resume(config, resume) if resume else None
    task_class = get_task_class(config.task)
    saved = None
    if resumed:
        saved = {role: IntensityNormalization.from_dict(record)
                 for role, record in resumed.card["normalizations"].items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MedGANWarning)
        data = load_task_data(config, task_class.needs, saved, volumes)
    notes = [str(w.message) for w in caught]
    for note in notes:
        warnings.warn(note, MedGANWarning, stacklevel=2)
    if not resumed:
        torch.manual_seed(config.train.seed)
    else:
        known = resumed.card.get("label_values", list(range(resumed.card.get("num_classes", 0))))
        if data.label_values != known:
            raise ConfigError(
                f"Can't resume {resume}: its model knows {len(known)} classes but these label "
                f"maps hold {data.num_classes} (label values {known} against "
                f"{data.label_values}); train a new model for these labels."
            )
    channels = data.roles["image"][0].shape[0]
    if resumed:
        task = task_class.restore(config, device, channels, data.num_classes, resumed)
    else:
        task = task_class(config, device, channels, data.num_classes)
    task.label_values = data.label_values
    batches = BatchSource(data, config, device, world)
    step, history = 0, {}
    if resumed:
        task.load_training_state(resumed.training_state, resumed.training_meta["task"])
        batches.load_state_dict({k[len("sampler."):]: v for k, v in
                                 resumed.training_state.items() if k.startswith("sampler.")})
        step = resumed.card["step"]
        history = {k: list(v) for k, v in resumed.training_meta.get("history", {}).items()}
    _before_first_step(config, world, task, data,
                       lambda: task_class(config, device, channels, data.num_classes))
    task.distribute(world)
    card = dict(_card(config, task, data), processes=world.size)
    run = _Run(task, batches, out, card, history, (resumed.path, step) if resumed else None)
    if world.is_main:
        probe(Path(out).parent, _checkpoint_bytes(task), Path(out))  # before any step is spent

    total = config.train.steps
    yield TrainEvent("start", step, total, message="; ".join(notes))
    started, first_step = time.perf_counter(), step
    with out_of_memory_advice(device, config.model.patch_size, config.train.batch_size):
        while step < total:
            if world.any(_stop_requested(stop)):
                path = run.save(step)
                yield TrainEvent(
                    "stopped",
                    step,
                    total,
                    checkpoint=str(path),
                    message=f"stopped at step {step}; checkpoint saved",
                )
                return
            step += 1
            losses = world.mean(task.train_step(batches, step))
            bad = [name for name, value in losses.items() if not math.isfinite(value)]
            if bad:
                raise TrainingError(run.divergence_message(step, bad))
            run.record(losses)
            rate = (step - first_step) / max(time.perf_counter() - started, 1e-9)
            event = TrainEvent("step", step, total, losses, rate, (total - step) / max(rate, 1e-9))
            if world.is_main and (step % config.train.preview_every == 0 or step == total):
                event.preview = run.preview_volume()
            if step % config.train.checkpoint_every == 0 and step < total:
                event.checkpoint = str(run.save(step))
            yield event
    path = run.save(step)
    yield TrainEvent("done", step, total, checkpoint=str(path), message=f"finished {step} steps")


def _before_first_step(config: Config, world: World, task: Task, data: TaskData,
                       make_task: Callable[[], Task]) -> None:
    """The speed switches and the memory plan (#11): a config that can't fit is refused
    here, with the estimate, instead of running out of memory mid-run."""
    set_cudnn_benchmark(config, world.device)
    check_memory(plan_memory(config, make_task, data.roles, world), config)
    compile_nets(config, task.nets)


def _checkpoint_bytes(task: Task) -> int:
    """About the size of a checkpoint: weights, two Adam moments each, and room for the card."""
    weights = sum(t.numel() * t.element_size() for t in task.weights().values())
    return 3 * weights + CARD_ROOM


def _load_resume(config: Config, resume: str | Path):
    checkpoint = load_checkpoint(resume, with_training_state=True)
    saved = Config.from_dict(checkpoint.card["config"], source=f"the card of {resume}")
    if saved.task != config.task:
        raise ConfigError(
            f"Can't resume {resume}: it was trained for task {saved.task!r}, not {config.task!r}."
        )
    if saved.model != config.model:
        raise ConfigError(
            f"Can't resume {resume}: its nets ({saved.model}) differ from the ones asked for "
            f"({config.model}); resume without changing model settings."
        )
    if checkpoint.card["step"] >= config.train.steps:
        raise ConfigError(
            f"{resume} has already trained {checkpoint.card['step']} steps; ask for more "
            f"(--steps > {checkpoint.card['step']}) to resume."
        )
    return checkpoint


def _card(config: Config, task: Task, data: TaskData) -> dict[str, Any]:
    card = {
        "format_version": 1,
        "task": config.task,
        "package": "napari-medgan",
        "version": __version__,
        "nets": task.net_summary(),
        "patch_size": config.model.patch_size,
        "channels": task.channels,
        "num_classes": task.num_classes,
        "label_values": task.label_values,
        "spacing": list(data.reference.spacing),
        "direction": data.reference.direction.tolist(),
        "normalizations": {role: n.to_dict() for role, n in data.normalizations.items()},
        "modality": data.normalizations["image"].modality,
        "data": data.summary,
        "seed": config.train.seed,
        "config": config.to_dict(),
    }
    if task.generates_labels:  # image + label pairs (#10)
        card.update(generates_labels=True, class_names=class_names(task.num_classes))
    return card


def class_names(num_classes: int) -> list[str]:
    """Names of the classes, for a card: label files carry none, so ``class k`` by number."""
    return ["background", *(f"class {k}" for k in range(1, num_classes))]


class _Run:
    """Bookkeeping of one training run: loss history, previews, checkpoints."""

    def __init__(self, task: Task, batches: BatchSource, out: str | Path, card: dict,
                 history: dict,
                 last_checkpoint: tuple[Path, int] | None):
        self.task, self.batches, self.out, self.card = task, batches, Path(out), card
        self.history: dict[str, list[float]] = history
        self.last_checkpoint = last_checkpoint

    def record(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.history.setdefault(name, []).append(value)

    def preview_volume(self) -> Volume:
        patch = self.task.preview()
        if self.task.preview_role:
            norm = self.card["normalizations"][self.task.preview_role]
            patch = denormalize(IntensityNormalization.from_dict(norm), patch)
        patch = patch.cpu()
        return Volume(patch, patch_affine(self.card), name="preview")

    def save(self, step: int) -> Path:
        """Write the checkpoint; among several processes only rank 0 does, the others
        (holding the same weights and random state) return where it is written."""
        if not self.task.world.is_main:
            return self.out
        self.task.before_save()
        tensors, task_meta = self.task.training_state()
        tensors.update({f"sampler.{k}": v for k, v in self.batches.state_dict().items()})
        card = dict(
            self.card,
            step=step,
            created=datetime.datetime.now().isoformat(timespec="seconds"),
            loss_history=_thin(self.history),
        )
        try:
            path = save_checkpoint(
                self.out,
                card=card,
                weights=self.task.weights(),
                training_state=tensors,
                training_meta={"task": task_meta, "history": self.history},
            )
        except OutputError as err:
            raise OutputError(f"{err} At step {step}, {self.kept()}.") from err
        self.last_checkpoint = (path, step)
        return path

    def kept(self) -> str:
        """Where the last good checkpoint is, for messages about a run that can't go on."""
        if self.last_checkpoint:
            return (
                f"the last good checkpoint is {self.last_checkpoint[0]} "
                f"(step {self.last_checkpoint[1]})"
            )
        return "no checkpoint had been written yet"

    def divergence_message(self, step: int, bad: list[str]) -> str:
        return (
            f"Training diverged: {', '.join(bad)} became NaN or infinite at step {step}; "
            f"{self.kept()}. Try lower learning rates or another loss (e.g. --config with "
            "train.loss: hinge)."
        )


def _thin(history: dict[str, list[float]]) -> dict[str, list[float]]:
    """At most HISTORY_POINTS means per loss, so cards of long runs stay small."""
    thinned = {}
    for name, values in history.items():
        if len(values) <= HISTORY_POINTS:
            thinned[name] = [round(v, 6) for v in values]
        else:
            bins = np.array_split(np.asarray(values), HISTORY_POINTS)
            thinned[name] = [round(float(b.mean()), 6) for b in bins]
    return thinned
