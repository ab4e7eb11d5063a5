"""``translation``: modality A → modality B from paired volumes (pix2pix-3D)."""

from __future__ import annotations

import torch

from ..config import Config
from ..data.task_data import TaskNeeds
from ..data.volume import Volume
from ..metrics import image_similarity
from .base import NextBatch, Task
from .conditional import adversarial, critic_step, patchgan, unet


class TranslationTask(Task):
    """G maps A patches to B patches; D judges (A, B) pairs; L1 keeps G on the true B."""

    name = "translation"
    needs = TaskNeeds(target="paired")
    can_apply = True
    preview_role = "target"
    evaluate_truth = ("target",)

    def __init__(self, config: Config, device: torch.device, channels: int = 1,
                 num_classes: int = 0) -> None:
        super().__init__(config, device, channels, num_classes)
        self.nets = {"G": unet(config, channels, channels), "D": patchgan(config, 2 * channels)}
        self.finish_setup()
        self.optimizers = {"G": self.adam("G", config.train.lr_g),
                           "D": self.adam("D", config.lr_d)}

    def train_step(self, next_batch: NextBatch, step: int) -> dict[str, torch.Tensor]:
        batch = next_batch()
        a, b = self.to_layout(batch["image"]), self.to_layout(batch["target"])
        self.keep_for_preview(image=a)
        with self.autocast():
            fake = self.trained("G")(a)
        loss_d = critic_step(self, "D", torch.cat([a, b], 1), torch.cat([a, fake], 1))
        l1 = (fake.float() - b).abs().mean()
        loss_g = adversarial(self, "D", torch.cat([a, fake], 1)) + self.config.train.l1_weight * l1
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizers["G"].step()
        return {"loss_d": loss_d, "loss_g": loss_g.detach(), "l1": l1.detach()}

    @torch.no_grad()
    def predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.autocast():
            return self.nets["G"](self.to_layout(inputs["image"])).float()

    def score(self, result: Volume, truth: dict[str, Volume]) -> dict[str, float]:
        """PSNR, SSIM and MAE in the target's own units (HU for CT)."""
        target = truth["target"].tensor
        data_range = float(target.max() - target.min()) or 1.0
        return image_similarity(result.tensor, target, data_range=data_range)

    def preview(self) -> torch.Tensor:
        return self.predict_preview("G")


TASK = TranslationTask
