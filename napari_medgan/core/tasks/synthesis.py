"""``synthesis``: noise → realistic 3D patches (DCGAN-3D; WGAN-GP with ``loss: wgan-gp``).

A second critic stands beside D (``model.local_d_channels``, on by default): a PatchGAN
giving one logit per neighbourhood (34³ with the default ``model.local_d_layers: 2``; its
instance normalisation sees the patch), judging every part of a patch where D's one logit
judges the whole. With trilinear upsampling (the default) it is the one setting measured
to make the demo's patches markedly harder to tell from real ones (bench/README.md).

Trained with label maps, G draws each patch with its label map (image + label pairs for
augmentation): its output has the image channels and then one class-probability channel
per class, and D judges images with their labels (real: the one-hot of the true labels),
so it learns which anatomy goes with which labels.
"""

from __future__ import annotations

import copy

import torch

from ..config import Config
from ..data.task_data import TaskNeeds
from ..losses import discriminator_loss, generator_loss, gradient_penalty
from ..nets.dcgan import DCGANDiscriminator3D, DCGANGenerator3D
from ..nets.ema import recalibrate_batchnorm, update_ema
from ..nets.patchgan import PatchGAN3D
from .base import NextBatch, Task

CALIBRATION_BATCH = 16
CALIBRATION_SEED = 1_000_003  # any fixed seed; kept apart from the training stream


class SynthesisTask(Task):
    """G draws patches from noise, D tells them from real patches; ``G_ema`` synthesizes."""

    name = "synthesis"
    needs = TaskNeeds(optional_labels=True)
    can_synthesize = True

    def __init__(self, config: Config, device: torch.device, channels: int = 1,
                 num_classes: int = 0) -> None:
        super().__init__(config, device, channels, num_classes)
        m, t = config.model, config.train
        generator = DCGANGenerator3D(
            m.latent_dim, channels, m.patch_size, m.g_channels, m.max_channels, m.upsample,
            m.g_residual, label_channels=num_classes, checkpointing=m.activation_checkpointing,
        )
        self.nets = {
            "G": generator,
            "G_ema": copy.deepcopy(generator).requires_grad_(False),
            "D": DCGANDiscriminator3D(
                channels + num_classes, m.patch_size, m.d_channels, m.max_channels,
                m.spectral_norm, config.d_norm, m.d_residual,
                checkpointing=m.activation_checkpointing,
            ),
        }
        if config.local_d_channels:
            self.nets["D_local"] = PatchGAN3D(channels + num_classes, config.local_d_channels,
                                              layers=m.local_d_layers)
        self.critics = [name for name in ("D", "D_local") if name in self.nets]
        self.finish_setup()
        self.optimizers = {"G": self.adam("G", t.lr_g)}
        self.optimizers.update({name: self.adam(name, config.lr_d) for name in self.critics})
        self.n_critic = config.n_critic
        self.preview_noise = self.noise(1, seed=t.seed)

    def noise(self, n: int, seed: int | None = None) -> torch.Tensor:
        """Latent vectors; with ``seed`` independent of the training stream (and of the device)."""
        if seed is None:
            return self.world.share(lambda k: torch.randn(
                k, self.config.model.latent_dim, generator=self.rng, device=self.device), n)
        cpu = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.config.model.latent_dim, generator=cpu).to(self.device)

    def train_step(self, next_batch: NextBatch, step: int) -> dict[str, torch.Tensor]:
        G, D = self.trained("G"), self.trained("D")
        kind = self.config.loss
        for critic_step in range(self.n_critic):
            real = self.real_batch(next_batch())
            # the last critic step's fakes are G's batch too (one forward per step, as in
            # DCGAN: a fifth more steps in the same time), so they keep their graph
            with self.autocast(), torch.set_grad_enabled(critic_step == self.n_critic - 1):
                drawn = G(self.noise(real.shape[0]))
            real, fake = self.augment(real), self.augment(drawn.detach())  # D sees both augmented
            with self.autocast():
                loss_d = sum(discriminator_loss(kind, self.trained(name)(real),
                                                self.trained(name)(fake))
                             for name in self.critics)
            if kind == "wgan-gp":
                penalty = gradient_penalty(D, real, fake.float(), self.rng)
                loss_d = loss_d + self.config.train.gp_weight * penalty
            loss_d = loss_d + self.r1_term(D, real, (step - 1) * self.n_critic + critic_step)
            for name in self.critics:
                self.optimizers[name].zero_grad(set_to_none=True)
            loss_d.backward()
            for name in self.critics:
                self.optimizers[name].step()
        with self.autocast():
            fake = self.augment(drawn)
            # the critics judge: no sync
            loss_g = sum(generator_loss(kind, self.nets[name](fake)) for name in self.critics)
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizers["G"].step()
        update_ema(self.nets["G_ema"], G, self.config.train.ema_decay, step)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    def real_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What D sees of real data: the image patches, and the one-hot of their labels."""
        image = self.to_layout(batch["image"])
        if not self.generates_labels:
            return image
        return torch.cat([image, self.class_onehot(batch["labels"])[1]], 1)

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``(n, C, p, p, p)`` normalised patches from the EMA generator; a seed fixes them."""
        return self.sample_pairs(n, seed)[0]

    @torch.no_grad()
    def sample_pairs(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The patches of :meth:`sample` and, from a model trained with labels, their
        ``(n, 1, p, p, p)`` class indices (the most probable class of each voxel)."""
        ema = self.nets["G_ema"].eval()
        with self.autocast():
            drawn = ema(self.noise(n, seed=seed)).float()
        images = drawn[:, :self.channels]
        classes = drawn[:, self.channels:].argmax(1, keepdim=True) if self.generates_labels \
            else None
        return images, classes

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        self.before_save()
        ema = self.nets["G_ema"]
        was_training = ema.training
        ema.eval()
        with self.autocast():
            patch = ema(self.preview_noise).float()[0, :self.channels]
        ema.train(was_training)
        return patch

    def before_save(self) -> None:
        """Fit G_ema's BatchNorm statistics to its own weights (fixed noise: no RNG drawn)."""
        with self.autocast():
            recalibrate_batchnorm(
                self.nets["G_ema"],
                lambda i: self.noise(CALIBRATION_BATCH, seed=CALIBRATION_SEED + i),
            )


TASK = SynthesisTask
