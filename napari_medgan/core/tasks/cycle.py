"""``cycle``: modality A ↔ modality B from two unpaired sets (CycleGAN-3D).

Two U-Nets translate both ways, ``G_AB``: A → B and ``G_BA``: B → A, each judged by a
PatchGAN on its own output domain (``D_B`` on B patches, ``D_A`` on A patches). Since
no A patch has a true B partner, what keeps a translation faithful to its input is
cycle consistency: ``G_BA(G_AB(a)) ≈ a`` and ``G_AB(G_BA(b)) ≈ b`` (L1, weighted
``train.cycle_weight``). The identity term ``G_AB(b) ≈ b``, ``G_BA(a) ≈ a`` (L1,
weighted ``train.identity_weight``) keeps intensities from drifting; it assumes A and
B share units (e.g. two MR contrasts) and is switched off by a weight of 0.

CycleGAN (Zhu et al., 2017) uses the least-squares adversarial loss, the usual
choice here: ``train.loss: lsgan`` (what ``auto`` resolves to for this task); any
other of the package's losses is respected.
The paper's defaults are ``cycle_weight: 10`` and ``identity_weight: 5`` (half of it).
Its history buffer of past fakes for the critics is not used here: each critic sees
the current generator's fakes.

Applied to a volume, the model translates A → B with ``G_AB``.

>>> from napari_medgan.core import api
>>> config = api.Config(task="cycle")
>>> config.data.paths, config.data.targets = ["ct/"], ["mr/"]   # two unpaired sets
>>> config.train.loss = "lsgan"
>>> list(api.train(config, "ckpt"))                              # doctest: +SKIP
>>> mr = api.apply(api.load_model("ckpt"), "ct/patient7.nii.gz")  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from ..config import Config
from ..data.task_data import TaskNeeds
from .base import NextBatch, Task
from .conditional import adversarial, critic_step, patchgan, unet
from .translation import TranslationTask


def _l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.float() - y.float()).abs().mean()


class CycleTask(Task):
    """``G_AB`` / ``G_BA`` translate between the sets, ``D_A`` / ``D_B`` judge each domain."""

    name = "cycle"
    needs = TaskNeeds(target="unpaired")
    can_apply = True
    output_role = "target"  # apply gives B, in B's units
    reversible = True  # apply(..., reverse=True) gives A from B
    preview_role = "target"
    evaluate_truth = ("target",)

    def __init__(self, config: Config, device: torch.device, channels: int = 1,
                 num_classes: int = 0) -> None:
        super().__init__(config, device, channels, num_classes)
        self.nets = {
            "G_AB": unet(config, channels, channels),
            "G_BA": unet(config, channels, channels),
            "D_A": patchgan(config, channels),
            "D_B": patchgan(config, channels),
        }
        self.finish_setup()
        lr_g, lr_d = config.train.lr_g, config.lr_d
        self.optimizers = {name: self.adam(name, lr_g if name.startswith("G") else lr_d)
                           for name in self.nets}

    def train_step(self, next_batch: NextBatch, step: int) -> dict[str, torch.Tensor]:
        batch = next_batch()
        a, b = self.to_layout(batch["image"]), self.to_layout(batch["target"])
        self.keep_for_preview(image=a)
        G_AB, G_BA = self.trained("G_AB"), self.trained("G_BA")
        train = self.config.train
        with self.autocast():
            fake_b, fake_a = G_AB(a), G_BA(b)
        loss_d_b = critic_step(self, "D_B", b, fake_b)
        loss_d_a = critic_step(self, "D_A", a, fake_a)

        critics = [self.nets["D_A"], self.nets["D_B"]]
        for D in critics:  # the generators' step needs no gradient of the critics' weights
            D.requires_grad_(False)
        with self.autocast():
            rec_a, rec_b = G_BA(fake_b), G_AB(fake_a)
        cycle = _l1(rec_a, a) + _l1(rec_b, b)
        adv = adversarial(self, "D_B", fake_b) + adversarial(self, "D_A", fake_a)
        loss_g = adv + train.cycle_weight * cycle
        losses = {"cycle": cycle.detach()}
        if train.identity_weight > 0:  # G_AB(b) ≈ b, G_BA(a) ≈ a: only where A and B share units
            with self.autocast():
                identity = _l1(G_AB(b), b) + _l1(G_BA(a), a)
            loss_g = loss_g + train.identity_weight * identity
            losses["identity"] = identity.detach()
        for name in ("G_AB", "G_BA"):
            self.optimizers[name].zero_grad(set_to_none=True)
        loss_g.backward()
        for D in critics:
            D.requires_grad_(True)
        for name in ("G_AB", "G_BA"):
            self.optimizers[name].step()
        return {"loss_d_a": loss_d_a, "loss_d_b": loss_d_b, "loss_g": loss_g.detach(), **losses}

    @torch.no_grad()
    def predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """A → B with ``G_AB``; given a ``target`` (B) input instead, B → A with ``G_BA``."""
        net, role = ("G_BA", "target") if "target" in inputs else ("G_AB", "image")
        with self.autocast():
            return self.nets[net](self.to_layout(inputs[role])).float()

    # PSNR, SSIM and MAE in B's own units, as for paired translation.
    score = TranslationTask.score

    def preview(self) -> torch.Tensor:
        return self.predict_preview("G_AB")


TASK = CycleTask
