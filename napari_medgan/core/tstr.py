"""Train on synthetic, test on real (TSTR): do a model's image + label pairs teach a segmenter?

The project's segmenter (its U-Net, Dice + cross-entropy, the critic's weight at 0) is
trained three times with the same step budget: on ``n`` synthetic pairs, on ``n`` real
patch pairs cut from the model's training volumes as training cut them, and on both.
Each is applied to held-out real volumes and scored by Dice against their label maps.
Synthetic data is useful for augmentation when the synthetic-only Dice comes near the
real-only one (ratio ≥ 0.9) and real + synthetic does not fall below real alone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .data.task_data import BatchSource, TaskNeeds, load_task_data
from .data.volume import Volume
from .errors import DataError
from .tasks.segmentation import SegmentationTask

if TYPE_CHECKING:
    from .api import Model

TSTR_STEPS = 200  # segmenter steps per training set (the demo's budget)
TSTR_BATCH = 8


def patch_pools(model: Model, n: int, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """``n`` synthetic and ``n`` real (image, class index) patch pairs, normalised as the
    model sees them, and both together; real ones from the files named on the card."""
    from .api import drawn_batches

    images, classes = [], []
    for _, image, label in drawn_batches(model, n, seed):
        images.append(image.cpu())
        classes.append(label.cpu().float())
    synthetic = {"image": torch.cat(images), "labels": torch.cat(classes)}
    files, label_files = training_files(model)
    config = copy.deepcopy(model.task.config)
    config.data.paths, config.data.labels, config.data.masks = files, label_files, None
    config.data.sampler, config.train.batch_size, config.train.seed = "device", n, seed
    real = load_task_data(config, TaskNeeds(labels=True), dict(model.normalizations))
    if real.label_values != model.task.label_values:
        raise DataError(f"The label maps on the card of {model.path} now hold label values "
                        f"{real.label_values}, not the model's {model.task.label_values}.")
    cut = BatchSource(real, config, torch.device("cpu"))()
    real_pool = {"image": cut["image"], "labels": cut["labels"]}
    both = {role: torch.cat([real_pool[role], synthetic[role]]) for role in synthetic}
    return {"synthetic": synthetic, "real": real_pool, "real_plus_synthetic": both}


def training_files(model: Model) -> tuple[list[str], list[str]]:
    """The training volumes and label maps named on the card, which must be on disk."""
    data = model.card.get("data", {})
    files, label_files = data.get("files", []), data.get("label_files", [])
    missing = [f for f in [*files, *label_files] if not Path(f).exists()]
    if not files or missing:
        raise DataError(
            f"TSTR needs the training volumes and label maps named on the card of "
            f"{model.path} to cut real patches from; {missing[0] if missing else 'none'} is "
            "not on disk. Evaluate where the training files are."
        )
    return files, label_files


def train_segmenter(model: Model, pool: dict[str, torch.Tensor], steps: int,
                    seed: int) -> SegmentationTask:
    """The project's segmenter without its critic's term, trained on ``pool`` for ``steps``."""
    config = copy.deepcopy(model.task.config)
    config.task = "segmentation"
    config.train.adversarial_weight = 0.0
    config.train.seed, config.train.steps = seed, steps
    torch.manual_seed(seed)
    task = SegmentationTask(config, torch.device("cpu"), model.task.channels,
                            model.task.num_classes)
    task.label_values = list(model.task.label_values)
    draw = torch.Generator().manual_seed(seed)
    size = pool["image"].shape[0]
    batch = min(TSTR_BATCH, size)

    def next_batch() -> dict[str, torch.Tensor]:
        chosen = torch.randperm(size, generator=draw)[:batch]
        return {role: tensor[chosen] for role, tensor in pool.items()}

    for step in range(1, steps + 1):
        task.train_step(next_batch, step)
    return task.eval()


def tstr_report(model: Model, volumes: list[Volume], truths: list[Volume], *, n: int,
                steps: int, seed: int) -> dict[str, Any]:
    """Mean held-out Dice of the segmenter trained on each pool, and synthetic ÷ real.

    ``truths``: the label map of each of ``volumes``, checked against the model's labels.
    """
    from .api import Model as ModelClass
    from .api import apply

    dice = {}
    for name, pool in patch_pools(model, n, seed).items():
        segmenter = train_segmenter(model, pool, steps, seed)
        wrapped = ModelClass(model.path, {"task": "segmentation",
                                          "patch_size": model.patch_size},
                             segmenter, dict(model.normalizations))
        scores = [segmenter.score(apply(wrapped, volume), {"labels": truth})["dice_mean"]
                  for volume, truth in zip(volumes, truths, strict=True)]
        dice[name] = float(np.mean(scores))
    ratio = dice["synthetic"] / dice["real"] if dice["real"] > 0 else float("nan")
    return {"dice_synthetic": dice["synthetic"], "dice_real": dice["real"],
            "dice_real_plus_synthetic": dice["real_plus_synthetic"],
            "ratio_synthetic_to_real": ratio, "n_pairs": n, "steps": steps}
