"""``inpainting``: a volume and a hole mask → the volume with the hole filled, the rest kept.

A U-Net sees the volume with the hole blanked plus the mask as a second channel; its
output is used inside the hole only (``image * (1 - mask) + G(...) * mask``), and a
PatchGAN judges (completed volume, mask) against (real volume, mask). Training holes
come from ``--mask`` files (patches centred on them) or, without those, are drawn per
batch: a few random boxes, with the task's own generator so a resumed run repeats them.
"""

from __future__ import annotations

import torch

from ..augment import box_mask
from ..config import Config
from ..data.task_data import TaskNeeds
from ..data.volume import Volume
from ..metrics import image_similarity
from .base import NextBatch, Task
from .conditional import adversarial, critic_step, patchgan, unet

#: The value the hole is blanked to in G's input (mid-range of the normalised [-1, 1]).
HOLE_FILL = 0.0
#: Weight of the L1 outside the hole, relative to the one inside: the composite ignores G
#: there, but reconstructing the context too gives G a denser signal early on.
OUTSIDE_L1 = 0.1
#: Random training holes: up to this many boxes per patch, sides this share of the patch.
MAX_BOXES = 3
BOX_SIDE = (0.2, 0.5)


class InpaintingTask(Task):
    """G fills the masked region from its surroundings; L1 in the hole keeps it on the truth."""

    name = "inpainting"
    needs = TaskNeeds(masks="holes")
    can_apply = True
    apply_inputs = ("image", "mask")
    output = "intensity"
    output_role = "image"  # same modality as the input
    preview_role = "image"
    evaluate_truth = ("mask",)

    def __init__(self, config: Config, device: torch.device, channels: int = 1,
                 num_classes: int = 0) -> None:
        super().__init__(config, device, channels, num_classes)
        self.nets = {"G": unet(config, channels + 1, channels),
                     "D": patchgan(config, channels + 1)}
        self.finish_setup()
        self.optimizers = {"G": self.adam("G", config.train.lr_g),
                           "D": self.adam("D", config.lr_d)}

    def random_holes(self, batch: int, size: int) -> torch.Tensor:
        """``(batch, 1, size, size, size)`` 0/1 masks: 1 to ``MAX_BOXES`` random boxes each."""
        g, dev = self.rng, self.device
        low, high = BOX_SIDE
        sides = (low + (high - low) * torch.rand(batch, MAX_BOXES, 3, generator=g, device=dev))
        sides = (sides * size).round().clamp(min=1)
        starts = (torch.rand(batch, MAX_BOXES, 3, generator=g, device=dev)
                  * (size - sides + 1)).floor()
        # box k of a patch is used when k < its count; the first box always is
        count = torch.randint(1, MAX_BOXES + 1, (batch, 1), generator=g, device=dev)
        used = torch.arange(MAX_BOXES, device=dev) < count  # (B, K)
        return box_mask(starts, sides * used[..., None], (size,) * 3).float()  # unused: empty

    def blank(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """G's input: the image with the hole set to ``HOLE_FILL``, and the mask channel."""
        return torch.cat([image * (1 - mask) + HOLE_FILL * mask, mask], 1)

    def complete(self, image: torch.Tensor, mask: torch.Tensor,
                 G: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The composite (G's fill inside the hole, the image elsewhere) and the raw fill."""
        with self.autocast():
            fill = G(self.to_layout(self.blank(image, mask)))
        return image * (1 - mask) + fill.float() * mask, fill.float()

    def train_step(self, next_batch: NextBatch, step: int) -> dict[str, torch.Tensor]:
        batch = next_batch()
        real = self.to_layout(batch["image"])
        mask = batch.get("mask")
        if mask is None:
            mask = self.world.share(lambda n: self.random_holes(n, real.shape[-1]),
                                    real.shape[0])
        mask = self.to_layout((mask > 0).to(real.dtype))
        self.keep_for_preview(image=real, mask=mask)
        composite, fill = self.complete(real, mask, self.trained("G"))
        loss_d = critic_step(self, "D", torch.cat([real, mask], 1),
                             torch.cat([composite, mask], 1))
        error = (fill - real).abs()
        # means over each region's voxels (all channels), so hole size doesn't scale the loss
        hole_voxels = (mask.sum() * real.shape[1]).clamp(min=1)
        rest_voxels = ((1 - mask).sum() * real.shape[1]).clamp(min=1)
        l1_hole = (error * mask).sum() / hole_voxels
        l1_rest = (error * (1 - mask)).sum() / rest_voxels
        loss_g = (adversarial(self, "D", torch.cat([composite, mask], 1))
                  + self.config.train.l1_weight * (l1_hole + OUTSIDE_L1 * l1_rest))
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizers["G"].step()
        return {"loss_d": loss_d, "loss_g": loss_g.detach(), "l1_hole": l1_hole.detach()}

    @torch.no_grad()
    def predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        image = self.to_layout(inputs["image"])
        mask = self.to_layout((inputs["mask"] > 0).to(image.dtype))
        return self.complete(image, mask, self.nets["G"])[0]

    def finish(self, output: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Re-composite the blended volume: outside the mask, exactly the (normalised) input."""
        mask = inputs["mask"] > 0
        return torch.where(mask, output.to(inputs["image"].device), inputs["image"])

    def score(self, result: Volume, truth: dict[str, Volume]) -> dict[str, float]:
        """PSNR, SSIM and MAE inside the hole, against the intact volume, in its own units."""
        intact = truth["input"].tensor.float()
        hole = truth["mask"].tensor[0] > 0  # on the volume's grid: checked by api.evaluate
        data_range = float(intact.max() - intact.min()) or 1.0
        scores = image_similarity(result.tensor.float(), intact, data_range=data_range,
                                  mask=hole)
        return {f"{key}_hole": value for key, value in scores.items()}

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        return self.predict_preview("G")


TASK = InpaintingTask
