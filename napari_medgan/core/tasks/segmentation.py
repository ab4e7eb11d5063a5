"""``segmentation``: volume → label map (a U-Net segmenter sharpened by an adversarial critic).

The segmenter ``S`` gives class logits; it learns from soft Dice + cross-entropy against
the true labels, and from a PatchGAN critic ``D`` that judges (image, label probabilities)
pairs: real = (image, one-hot of the true labels), fake = (image, softmax of ``S``), so
``S`` is pushed towards label maps whose shapes look like real ones (Luc et al., 2016).
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
from .conditional import adam, adversarial, critic_step, patchgan, unet

DICE_SMOOTH = 1e-5
# The critic tells one-hot truth from softmax output at once; at full weight its term
# outweighed Dice + CE (held-out Dice 0.44-0.72 against 0.65-0.78 at this scale).
ADVERSARIAL_SCALE = 0.1


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
    """S maps image patches to class logits; D judges (image, label probabilities) pairs."""

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
        self.optimizers = {"S": adam(self, "S", config.train.lr_g),
                           "D": adam(self, "D", config.train.lr_d)}

    def _onehot(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, ...)`` float labels → class indices ``(B, ...)`` and one-hot ``(B, K, ...)``."""
        classes = labels[:, 0].round().long().clamp_(0, self.num_classes - 1)
        onehot = F.one_hot(classes, self.num_classes).movedim(-1, 1).float()
        return classes, self.to_layout(onehot)

    def train_step(self, next_batch: NextBatch, step: int) -> dict[str, torch.Tensor]:
        batch = next_batch()
        image = self.to_layout(batch["image"])
        classes, onehot = self._onehot(batch["labels"])
        self.keep_for_preview(image=image)
        with self.autocast():
            logits = self.trained("S")(image)
        logits = logits.float()
        probs = logits.softmax(1)
        loss_d = critic_step(self, "D", torch.cat([image, onehot], 1),
                             torch.cat([image, probs], 1))
        dice_loss = soft_dice_loss(probs, onehot)
        ce = F.cross_entropy(logits, classes)
        critic_term = adversarial(self, "D", torch.cat([image, probs], 1))
        loss_s = dice_loss + ce + ADVERSARIAL_SCALE * critic_term
        self.optimizers["S"].zero_grad(set_to_none=True)
        loss_s.backward()
        self.optimizers["S"].step()
        return {"loss_d": loss_d, "loss_s": loss_s.detach(), "dice_loss": dice_loss.detach(),
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
