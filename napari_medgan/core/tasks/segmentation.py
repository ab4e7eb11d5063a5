"""``segmentation``: volume → label map (a U-Net segmenter, optionally with an adversarial critic).

The segmenter ``S`` gives class logits; it learns from soft Dice + cross-entropy against
the true labels. With ``train.segmentation_critic`` a PatchGAN critic ``D`` also judges
(image, label probabilities) pairs: real = (image, the true labels), fake = (image,
softmax of ``S``), so ``S`` is pushed towards label maps whose shapes look like real ones
(Luc et al., 2016). The critic is opt-in: at short budgets it cost Dice (bench/README.md).
Against plain one-hot truth, D wins by softness alone (a softmax is never exactly 0 or 1)
and pushes ``S`` to be confident rather than right; so by default the real labels are
scaled to the segmenter's own confidence, and the term is ramped in after a warm-up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import Config
from ..data.pairs import check_label_map
from ..data.task_data import TaskNeeds
from ..data.volume import Volume
from ..errors import DataError
from ..metrics import dice_per_label, hd95_per_label
from .base import NextBatch, Task
from .conditional import adversarial, critic_step, patchgan, unet

DICE_SMOOTH = 1e-5
# At full weight the critic's term outweighed Dice + CE (held-out Dice 0.44-0.72 against
# 0.65-0.78 at this scale); train.adversarial_weight scales it further.
ADVERSARIAL_SCALE = 0.1
# Luc et al.'s floor on the true class's share in a scaled real label map
SCALED_CONFIDENCE = 0.9


def critic_ramp(step: int, steps: int, warmup: float) -> float:
    """The critic term's factor at ``step`` (1-based) of ``steps``: 0 for the first ``warmup``
    share of the steps, then rising linearly to 1 over the same share again, so Dice + CE
    settle the label map before the critic shapes it."""
    start = warmup * steps
    if start == 0:
        return 1.0
    return min(1.0, max(0.0, (step - start) / start))


def scaled_truth(onehot: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """True labels at the segmenter's own confidence (Luc et al., 2016, "scaling").

    The true class gets ``max(0.9, p_true)``, the other classes share the rest in the
    proportions ``S`` gives them; so real and fake maps differ in where the mass is,
    not in how soft they are.
    """
    probs = probs.detach()
    p_true = (probs * onehot).sum(1, keepdim=True)
    top = p_true.clamp(min=SCALED_CONFIDENCE)
    rest = (1 - top) / (1 - p_true).clamp_min(1e-6)
    return onehot * top + (1 - onehot) * probs * rest


def soft_dice_loss(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """1 − mean over classes of the soft Dice of ``(B, K, ...)`` probabilities and one-hot.

    Voxels of the whole batch are pooled per class, so a class missing from one patch
    doesn't make that patch's Dice undefined.
    """
    dims = (0, *range(2, probs.ndim))
    overlap = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * overlap + DICE_SMOOTH) / (total + DICE_SMOOTH)).mean()


class SegmentationTask(Task):
    """S maps image patches to class logits; D (trained only with the critic on) judges
    (image, label probabilities) pairs."""

    name = "segmentation"
    needs = TaskNeeds(labels=True)
    can_apply = True
    output = "labels"
    preview_role = None  # the preview is a label patch, not intensities
    evaluate_truth = ("labels",)

    def __init__(self, config: Config, device: torch.device, channels: int = 1,
                 num_classes: int = 0) -> None:
        super().__init__(config, device, channels, num_classes)
        if num_classes < 2:
            raise DataError(
                f"Segmentation needs at least 2 classes (background and one label); the label "
                f"maps hold {num_classes}. Give label maps with labelled voxels (1, 2, ...)."
            )
        self.nets = {"S": unet(config, channels, num_classes, output="logits"),
                     "D": patchgan(config, channels + num_classes)}
        self.finish_setup()
        self.optimizers = {"S": self.adam("S", config.train.lr_g),
                           "D": self.adam("D", config.lr_d)}

    def train_step(self, next_batch: NextBatch, step: int) -> dict[str, torch.Tensor]:
        batch = next_batch()
        image = self.to_layout(batch["image"])
        classes, onehot = self.class_onehot(batch["labels"])
        self.keep_for_preview(image=image)
        with self.autocast():
            logits = self.trained("S")(image)
        logits = logits.float()
        probs = logits.softmax(1)
        dice_loss = soft_dice_loss(probs, onehot)
        ce = F.cross_entropy(logits, classes)
        loss_s = dice_loss + ce
        losses = {}
        train = self.config.train
        if train.segmentation_critic:
            real = scaled_truth(onehot, probs) if train.critic_real == "scaled" else onehot
            fake = torch.cat([image, probs], 1)
            losses["loss_d"] = critic_step(self, "D", torch.cat([image, real], 1), fake)
            ramp = critic_ramp(step, train.steps, train.critic_warmup)
            loss_s = loss_s + ADVERSARIAL_SCALE * ramp * adversarial(self, "D", fake)
        self.optimizers["S"].zero_grad(set_to_none=True)
        loss_s.backward()
        self.optimizers["S"].step()
        return {**losses, "loss_s": loss_s.detach(), "dice_loss": dice_loss.detach(),
                "ce": ce.detach()}

    @torch.no_grad()
    def predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``(B, K, p, p, p)``: blending averages probabilities."""
        with self.autocast():
            logits = self.nets["S"](self.to_layout(inputs["image"]))
        return logits.float().softmax(1)

    def score(self, result: Volume, truth: dict[str, Volume]) -> dict[str, float]:
        """Dice and HD95 (mm, from the true label map's spacing) per label value but 0.

        ``result`` and the truth hold label values (0/255 stays 0/255), so the scores are
        named by value: ``dice_255``.
        """
        reference = truth["labels"]
        true = self._check_truth(reference)
        predicted = result.tensor[0].long()
        labels = self.label_values[1:]
        dice = dice_per_label(predicted, true, labels)
        hd95 = hd95_per_label(predicted, true, labels, spacing=reference.spacing)
        scores = {f"dice_{k}": dice[k] for k in labels}
        scores.update({f"hd95_{k}": hd95[k] for k in labels})
        scores["dice_mean"] = sum(dice.values()) / len(labels)
        return scores

    def check_truth(self, truth: dict[str, Volume]) -> None:
        self._check_truth(truth["labels"])

    def _check_truth(self, reference: Volume) -> torch.Tensor:
        """The true label map as ``(D, H, W)`` label values, or a DataError that names it.

        Its grid is checked against the volume's by ``api.evaluate``, as in training.
        """
        name = reference.name or "the true label map"
        check_label_map(reference, name)
        unknown = sorted(set(reference.tensor.unique().long().tolist()) - set(self.label_values))
        if unknown:
            raise DataError(
                f"The label map {name} holds label {unknown[0]}, but the model knows only "
                f"{self.num_classes} classes (label values "
                f"{', '.join(map(str, self.label_values))}); evaluate it against label maps "
                "with the labels it was trained on."
            )
        return reference.tensor[0].long()

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        """The argmax label patch ``(1, p, p, p)`` of the input patch kept at the first step."""
        return self.predict_preview("S").argmax(0, keepdim=True).float()


TASK = SegmentationTask
