"""What every task shares: nets and optimisers by name, their (de)serialisation, AMP."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import diff_augment
from ..checkpoint import (
    Checkpoint,
    check_shapes,
    load_state_strict,
    optimizer_from_tensors,
    optimizer_to_tensors,
)
from ..config import Config
from ..data.task_data import TaskNeeds
from ..data.volume import Volume
from ..distributed import World
from ..losses import r1_penalty
from ..speed import bf16_autocast, fused_adam

NextBatch = Callable[[], dict[str, torch.Tensor]]


class Task:
    """A trainable model family. Subclasses fill ``nets`` and ``optimizers`` in ``__init__``.

    ``nets`` holds every module whose weights go into ``model.safetensors``;
    ``rng`` is the task's own generator (noise, penalties), saved for exact resume.
    """

    name: ClassVar[str]
    needs: ClassVar[TaskNeeds] = TaskNeeds()
    can_synthesize: ClassVar[bool] = False
    preview_role: ClassVar[str | None] = "image"  # whose intensity units the preview is in
    # Whole-volume inference (api.apply): what is stacked as input, what comes out.
    can_apply: ClassVar[bool] = False
    apply_inputs: ClassVar[tuple[str, ...]] = ("image",)  # "mask" too for inpainting
    output: ClassVar[str] = "intensity"  # "intensity" (units of output_role), "labels", "map"
    output_role: ClassVar[str] = "target"
    reversible: ClassVar[bool] = False  # predict() also maps a "target" input back to "image"
    # What api.evaluate compares the result with: "target", "labels" or "mask" volumes.
    evaluate_truth: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Config, device: torch.device, channels: int = 1,
                 num_classes: int = 0) -> None:
        self.config = config
        self.device = device
        self.channels = channels
        self.num_classes = num_classes
        # The label value of each class (the card's label_values; class k is value k by default)
        self.label_values: list[int] = list(range(num_classes))
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.preview_input: dict[str, torch.Tensor] | None = None  # see keep_for_preview
        self.world = World(device=device)  # see distribute
        self.wrappers: dict[str, nn.Module] = {}
        # no Generator lives on the meta device, where restore() sizes the nets
        self.rng = torch.Generator(device="cpu" if device.type == "meta" else device)
        self.rng.manual_seed(config.train.seed)
        self.use_amp = bf16_autocast(config, device)
        # channels_last_3d: 1.4x the steps/s of the contiguous layout on a 2-core CPU
        # (bench/bench_train.py), and the layout cuDNN prefers on CUDA.
        self.channels_last = config.train.channels_last != "off"

    def finish_setup(self) -> None:
        """Move nets to the device and memory layout; call at the end of ``__init__``."""
        layout = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        for net in self.nets.values():
            net.to(self.device, memory_format=layout)

    def adam(self, net: str, lr: float) -> torch.optim.Adam:
        """Adam over ``nets[net]``; fused (one kernel for all parameters) as
        ``train.fused_adam`` says: "auto" fuses on CUDA only (see bench/README.md)."""
        return torch.optim.Adam(self.nets[net].parameters(), lr=lr,
                                betas=self.config.train.betas,
                                fused=fused_adam(self.config, self.device))

    def distribute(self, world: World) -> None:
        """Train among ``world``'s processes: each net an optimiser trains (and whose weights
        still learn) gets its own DDP wrapper; random draws take this process's share."""
        self.world = world
        if world.size > 1:
            self.wrappers = {name: world.wrap(self.nets[name]) for name in self.optimizers
                             if any(p.requires_grad for p in self.nets[name].parameters())}

    def trained(self, name: str) -> nn.Module:
        """The module a train step calls where ``name``'s own loss is minimised: its DDP
        wrapper in a distributed run. Elsewhere (a critic judging a generator's output, whose
        gradients there are thrown away) steps call ``self.nets[name]`` and sync nothing."""
        return self.wrappers.get(name, self.nets[name])

    def to_layout(self, batch: torch.Tensor) -> torch.Tensor:
        return (
            batch.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else batch
        )

    @property
    def generates_labels(self) -> bool:
        """Whether :meth:`sample_pairs` draws label maps with the patches (image + label pairs)."""
        return self.can_synthesize and self.num_classes > 0

    def class_onehot(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, ...)`` float class indices (label patches) → class indices ``(B, ...)``
        and their one-hot ``(B, K, ...)``, in the nets' memory layout."""
        classes = labels[:, 0].round().long().clamp_(0, self.num_classes - 1)
        onehot = F.one_hot(classes, self.num_classes).movedim(-1, 1).float()
        return classes, self.to_layout(onehot)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast with ``use_amp``; on the CPU only where gradients flow (training):
        CPU inference stays float32, whose outputs bfloat16 would quantise (a synthesized
        patch had ~1,300 distinct values instead of ~31,700)."""
        if self.use_amp and (torch.is_grad_enabled() or self.device.type != "cpu"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What a critic sees of ``x``: DiffAugment with ``train.diff_augment`` (none: ``x``),
        drawn from the task's generator so a resumed run repeats it."""
        return diff_augment(x, self.config.train.diff_augment, self.rng)

    def r1_term(self, critic: nn.Module, real: torch.Tensor, critic_step: int) -> torch.Tensor:
        """γ/2 · R1 on the critic's real input, every ``train.r1_every`` critic steps (counted
        from 0) and then weighted by it (lazy regularisation); 0 when the R1 weight is 0
        (``Config.r1_weight``: synthesis's default is on)."""
        train = self.config.train
        weight = self.config.r1_weight
        if weight == 0 or critic_step % train.r1_every:
            return torch.zeros((), device=real.device)
        return 0.5 * weight * train.r1_every * r1_penalty(critic, real.float())

    def train_step(self, next_batch: NextBatch, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the losses (0-d tensors, checked for NaN by the loop).

        ``next_batch()`` gives named patch batches: ``image``, and as the task needs them
        ``target``, ``labels``, ``mask``.
        """
        raise NotImplementedError

    def predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inference on one batch of normalised input patches (named as ``apply_inputs``)."""
        raise NotImplementedError

    def unready(self, card: dict[str, Any]) -> str | None:
        """Why a checkpoint with this card can't be applied yet (None: it can)."""
        return None

    def finish(self, output: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The blended whole-volume output → the result (still normalised); default: as is."""
        return output

    def check_truth(self, truth: dict[str, Volume]) -> None:
        """Refuse unusable truth before the (slow) whole-volume apply; default: nothing."""

    def score(self, result: Volume, truth: dict[str, Volume]) -> dict[str, float]:
        """Metrics of one applied volume against its ``evaluate_truth`` (and ``input``)."""
        raise NotImplementedError

    def keep_for_preview(self, **patches: torch.Tensor) -> None:
        """Keep the first step's first patches, so previews follow one input through training."""
        if self.preview_input is None:
            self.preview_input = {role: patch[:1].clone() for role, patch in patches.items()}

    @torch.no_grad()
    def predict_preview(self, net: str) -> torch.Tensor:
        """``predict`` on the kept patches with ``net`` in eval mode: ``(C, p, p, p)``."""
        module = self.nets[net]
        was_training = module.training
        module.eval()
        try:
            return self.predict(self.preview_input)[0]
        finally:
            module.train(was_training)

    def preview(self) -> torch.Tensor:
        """A ``(C, p, p, p)`` normalised volume that shows how training is going."""
        raise NotImplementedError

    def before_save(self) -> None:
        """Bring inference nets up to date before their weights are written (default: nothing)."""

    def eval(self) -> Task:
        for net in self.nets.values():
            net.eval()
        return self

    def weights(self) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{key}": value
            for name, net in self.nets.items()
            for key, value in net.state_dict().items()
        }

    @classmethod
    def restore(cls, config: Config, device: torch.device, channels: int, num_classes: int,
                checkpoint: Checkpoint) -> Task:
        """The task with a checkpoint's weights loaded.

        The nets are first built on the meta device, which allocates nothing, and their
        tensor shapes compared with the weights': a card that asks for other (or absurd)
        sizes is refused before any memory is taken.
        """
        with torch.device("meta"):
            planned = cls(config, torch.device("meta"), channels, num_classes)
        check_shapes({key: value.shape for key, value in planned.weights().items()},
                     {key: value.shape for key, value in checkpoint.weights.items()},
                     checkpoint.path)
        task = cls(config, device, channels, num_classes)
        task.load_weights(checkpoint.weights, checkpoint.path)
        return task

    def load_weights(self, tensors: dict[str, torch.Tensor], source: Path) -> None:
        for name, net in self.nets.items():
            load_state_strict(net, tensors, name, source)

    def training_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {"rng.task": self.rng.get_state()}
        meta: dict[str, Any] = {}
        for name, optimizer in self.optimizers.items():
            opt_tensors, meta[name] = optimizer_to_tensors(optimizer, f"optim.{name}")
            tensors.update(opt_tensors)
        return tensors, meta

    def load_training_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Continue a run; the learning rates and fused kernel of the current config win
        over the saved ones (set before loading, so fused Adam gets its state where it needs)."""
        self.rng.set_state(tensors["rng.task"])
        for name, optimizer in self.optimizers.items():
            groups = [dict(saved, lr=group["lr"], fused=group["fused"]) for saved, group in
                      zip(meta[name]["param_groups"], optimizer.param_groups, strict=True)]
            optimizer_from_tensors(optimizer, tensors, dict(meta[name], param_groups=groups),
                                   f"optim.{name}")

    def net_summary(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "class": type(net).__name__,
                "parameters": sum(p.numel() for p in net.parameters()),
            }
            for name, net in self.nets.items()
        }
