"""``anomaly``: learn the normal, flag the abnormal (f-AnoGAN, Schlegl et al., 2019).

Training has two phases over ``train.steps`` global steps:

1. the first ``(1 − train.encoder_fraction) · steps`` steps train a WGAN-GP on patches of
   normal volumes: exactly :class:`~.synthesis.SynthesisTask`'s step (DCGAN G, unnormalised
   D, ``n_critic`` critic steps per G step, G's EMA ``G_ema`` kept along);
2. the rest train an encoder ``E`` (patch → latent code) with G and D frozen, on the
   *izi_f* loss ``mean((x − G(E(x)))²) + κ · mean((f(x) − f(G(E(x))))²)``, where ``f`` is
   D's penultimate activations and κ = 1 (:data:`KAPPA`, as in the paper). E is Adam at
   ``train.lr_g`` (it plays the generator's part: matching G's output to the data).

The frozen generator of phase 2 is ``G_ema`` in eval mode, its BatchNorm statistics
re-estimated for its final weights when phase 2 begins: the same generator synthesis
would ship, and the one inference uses.

Inference (``api.apply``) gives the voxel anomaly map ``|x − G(E(x))|`` (the mean over
channels, in normalised units: 0 … 2), blended over the sliding windows. The feature
residual is a per-patch number and is left out of the map, which it would only fill with
patch-sized blocks. ``score`` ranks the map against the true lesion mask (AUROC, AUPRC,
best-threshold Dice) and gives one score per volume, ``score_volume``: the mean of the
map's top 1 % (:data:`TOP_FRACTION`) of voxels, which grows with a lesion's size and
contrast but not with the size of the normal tissue around it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import Config
from ..data.pairs import check_same_grid
from ..data.task_data import TaskNeeds
from ..data.volume import Volume
from ..errors import ConfigError
from ..metrics import auprc, auroc, best_threshold_dice
from ..nets.dcgan import DCGANEncoder3D
from .base import NextBatch
from .synthesis import SynthesisTask

KAPPA = 1.0  # weight of the feature residual in the izi_f loss (f-AnoGAN: κ = 1)
TOP_FRACTION = 0.01  # score_volume: the mean of this share of the highest map voxels


def volume_score(anomaly_map: torch.Tensor) -> float:
    """One number for a whole volume: the mean of its map's highest TOP_FRACTION of voxels."""
    scores = anomaly_map.float().flatten()
    return float(scores.topk(max(1, math.ceil(TOP_FRACTION * scores.numel()))).values.mean())


class AnomalyTask(SynthesisTask):
    """A WGAN-GP learns normal patches; an encoder then learns to invert its generator.

    Previews: in phase 1 a ``G_ema`` sample from fixed noise (what the GAN has learnt of
    the normal); in phase 2 the residual map ``|x − G(E(x))|`` of a fixed training patch,
    kept at the first step of the run (how well normal tissue is reconstructed: it should
    darken). Both in normalised units, hence ``preview_role = None``.
    """

    name = "anomaly"
    needs = TaskNeeds()
    can_synthesize = False
    can_apply = True
    output = "map"
    preview_role = None
    evaluate_truth = ("mask",)

    def __init__(self, config: Config, device: torch.device, channels: int = 1,
                 num_classes: int = 0) -> None:
        _check_config(config)
        super().__init__(config, device, channels, num_classes)
        m, t = config.model, config.train
        self.nets["E"] = DCGANEncoder3D(
            channels, m.latent_dim, m.patch_size, m.d_channels, m.max_channels,
            checkpointing=m.activation_checkpointing,
        )
        self.finish_setup()  # moves E; the nets already placed stay as they are
        self.optimizers["E"] = self.adam("E", t.lr_g)
        # The last step of phase 1; phase 2 once begun stays on, even when a resumed
        # run asks for more steps (which would move this boundary).
        self.gan_steps = gan_steps(t.steps, t.encoder_fraction)
        self.encoder_from: int | None = None

    # --- training -------------------------------------------------------------------------

    def train_step(self, next_batch: NextBatch, step: int) -> dict[str, torch.Tensor]:
        if self.preview_input is None:
            next_batch = self._keeping_preview(next_batch)
        if self.encoder_from is None and step > self.gan_steps:
            self.start_encoder(step)
        if self.encoder_from is None:
            return super().train_step(next_batch, step)
        return self.encoder_step(next_batch)

    def _keeping_preview(self, next_batch: NextBatch) -> NextBatch:
        """``next_batch`` that keeps the first patch it gives as the preview patch."""

        def first_patch_kept() -> dict[str, torch.Tensor]:
            batch = next_batch()
            self.keep_for_preview(image=batch["image"])
            return batch

        return first_patch_kept

    def start_encoder(self, step: int) -> None:
        """Phase 2 begins: freeze G_ema (BatchNorm fitted to its final weights) and D."""
        self.encoder_from = step
        self.before_save()
        self._freeze()

    def _freeze(self) -> None:
        self.nets["G_ema"].eval().requires_grad_(False)
        self.nets["D"].requires_grad_(False)
        self.nets["G"].requires_grad_(False)

    def encoder_step(self, next_batch: NextBatch) -> dict[str, torch.Tensor]:
        E, G, D = self.trained("E"), self.nets["G_ema"], self.nets["D"]
        G.eval()  # a preview may have put it back in training mode
        real = self.to_layout(next_batch()["image"])
        with self.autocast():
            fake = G(E(real))
            with torch.no_grad():
                real_features = D.features(real).float()
            fake_features = D.features(fake).float()
        loss_image = ((real - fake.float()) ** 2).mean()
        loss_features = ((real_features - fake_features) ** 2).mean()
        loss_e = loss_image + KAPPA * loss_features
        self.optimizers["E"].zero_grad(set_to_none=True)
        loss_e.backward()
        self.optimizers["E"].step()
        return {"loss_e": loss_e.detach(), "loss_image": loss_image.detach(),
                "loss_features": loss_features.detach()}

    def training_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().training_state()
        meta["anomaly"] = {"encoder_from": self.encoder_from}
        return tensors, meta

    def load_training_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_training_state(tensors, meta)
        self.encoder_from = meta.get("anomaly", {}).get("encoder_from")
        if self.encoder_from is not None:
            self._freeze()  # G_ema's statistics came with the weights

    def before_save(self) -> None:
        if self.encoder_from is None:  # in phase 2 G_ema is fixed and already fitted
            super().before_save()

    # --- inference ------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, image: torch.Tensor) -> torch.Tensor:
        """``G(E(x))`` of normalised patches ``(B, C, p, p, p)``."""
        with self.autocast():
            return self.nets["G_ema"](self.nets["E"](self.to_layout(image))).float()

    def unready(self, card: dict[str, Any]) -> str | None:
        if card["step"] > self.gan_steps:
            return None
        return (f"it stopped at step {card['step']}, before its encoder was trained (steps "
                f"{self.gan_steps + 1} to {self.config.train.steps}); resume it to finish")

    @torch.no_grad()
    def predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The voxel anomaly map ``|x − G(E(x))|`` (mean over channels), ``(B, 1, p, p, p)``."""
        image = inputs["image"]
        return (image - self.reconstruct(image)).abs().mean(1, keepdim=True)

    def score(self, result: Volume, truth: dict[str, Volume]) -> dict[str, float]:
        """AUROC, AUPRC and best-threshold Dice of the map against ``mask > 0``; the
        volume's score (mean of the top 1 % of the map) and the map's mean."""
        lesion = truth["mask"]
        check_same_grid(lesion, result, lesion.name or "", "the volume it marks",
                        what="lesion mask", advice="resample it onto the volume")
        scores = result.tensor[0].float()
        positive = lesion.tensor[0] > 0
        dice, threshold = best_threshold_dice(scores, positive, n_thresholds=None)
        return {
            "auroc": auroc(scores, positive),
            "auprc": auprc(scores, positive),
            "dice_best": dice,
            "threshold_best": threshold,
            "score_volume": volume_score(scores),
            "map_mean": float(scores.mean()),
        }

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        if self.encoder_from is None or self.preview_input is None:
            return super().preview()
        return self.predict_preview("E")


def gan_steps(steps: int, encoder_fraction: float) -> int:
    """How many of ``steps`` train the GAN (phase 1); the rest train the encoder.

    At least one step each when there are two or more steps.
    """
    return min(max(1, steps - 1), max(1, round((1.0 - encoder_fraction) * steps)))


def _check_config(config: Config) -> None:
    t = config.train
    if config.loss != "wgan-gp":
        raise ConfigError(
            f"The anomaly task trains its GAN with the wgan-gp loss (f-AnoGAN), but "
            f"train.loss is {t.loss!r}; set train.loss: wgan-gp or auto."
        )
    if config.d_norm != "none":  # Config.validate refuses this pair too; kept for direct use
        raise ConfigError(
            "The anomaly task's critic can't use model.d_norm: batch (batch statistics break "
            "the gradient penalty and couple a patch's features to its batch); use none or auto."
        )
    if not 0.0 < t.encoder_fraction < 1.0:
        raise ConfigError(
            f"train.encoder_fraction must be between 0 and 1 (the share of the steps that "
            f"train the encoder), got {t.encoder_fraction}."
        )


TASK = AnomalyTask
