"""Anomaly detection (f-AnoGAN) on real MNI152 crops: learn normal t1_a, find holes in t1_b."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_medgan.core import api
from napari_medgan.core.checkpoint import load_checkpoint, read_card
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.errors import CheckpointError, ConfigError
from napari_medgan.core.nets.dcgan import DCGANDiscriminator3D, DCGANEncoder3D
from napari_medgan.core.tasks.anomaly import AnomalyTask, gan_steps

GAN_KEYS = {"loss_d", "loss_g"}
ENCODER_KEYS = {"loss_e", "loss_image", "loss_features"}
RADIUS = 4


def anomaly_config(real_dir, steps=40, **train):
    config = api.Config()
    config.task = "anomaly"
    config.data.paths = [str(real_dir / "t1_a.nii.gz")]
    config.model.patch_size = 16
    config.model.latent_dim = 16
    config.model.g_channels = config.model.d_channels = 8
    config.model.max_channels = 32
    t = config.train
    t.steps, t.batch_size, t.device = steps, 4, "cpu"  # loss "auto": wgan-gp for anomaly
    t.n_critic = 2  # 5 is WGAN-GP's default; 2 keeps the test short and was enough
    t.lr_g = t.lr_d = 1e-3
    t.betas = (0.5, 0.9)
    t.encoder_fraction = 0.5
    t.preview_every = 10
    t.checkpoint_every = 1000
    for key, value in train.items():
        setattr(t, key, value)
    return config


def plant_holes(real_dir, out):
    """Three dark spheres (radius 4, at t1_b's 1st-percentile intensity, as CSF) deep in
    its white matter, chosen from the tissue labels; the lesioned volume and the mask on disk."""
    t1 = read_volume(real_dir / "t1_b.nii.gz")
    wm = (read_volume(real_dir / "labels_b.nii.gz").tensor[:1] == 2).float()
    core = -F.max_pool3d(-wm[None], 2 * RADIUS + 1, 1, RADIUS)[0, 0]  # whole cube in WM
    margin = RADIUS + 2
    inner = torch.zeros_like(core)
    inner[margin:-margin, margin:-margin, margin:-margin] = 1
    centres: list[list[int]] = []
    for c in (core * inner).nonzero().tolist():
        apart = (torch.tensor(centres) - torch.tensor(c)).pow(2).sum(1) if centres else None
        if apart is None or bool((apart >= (3 * RADIUS + 2) ** 2).all()):
            centres.append(c)
    assert len(centres) >= 3
    grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in wm.shape[1:]], indexing="ij"))
    mask = torch.zeros(wm.shape[1:], dtype=torch.bool)
    for c in centres[:3]:
        mask |= ((grid - torch.tensor(c).view(3, 1, 1, 1)) ** 2).sum(0) <= RADIUS**2
    lesioned = t1.tensor.clone().float()
    lesioned[0][mask] = torch.quantile(t1.tensor.float().flatten(), 0.01)
    image = write_volume(Volume(lesioned, t1.affine, "t1_b_lesioned"), out / "t1_b_lesion.nii.gz")
    truth = write_volume(
        Volume(mask[None].to(torch.uint8), t1.affine, "lesion"), out / "t1_b_lesion_mask.nii.gz"
    )
    return image, truth


@pytest.fixture(scope="module")
def trained(real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("anomaly")
    events = list(api.train(anomaly_config(real_dir), out / "ckpt"))
    return out, events


def test_training_runs_the_gan_then_the_encoder(trained):
    out, events = trained
    steps = [e for e in events if e.kind == "step"]
    assert events[-1].kind == "done" and len(steps) == 40
    assert all(set(e.losses) == GAN_KEYS for e in steps[:20])
    assert all(set(e.losses) == ENCODER_KEYS for e in steps[20:])
    assert all(np.isfinite(list(e.losses.values())).all() for e in steps)
    previews = {e.step: e.preview.tensor for e in steps if e.preview is not None}
    assert sorted(previews) == [10, 20, 30, 40]
    assert all(p.shape == (1, 16, 16, 16) for p in previews.values())
    # phase 1: a sample of G_ema from the preview noise (G_ema is frozen after phase 1)
    torch.testing.assert_close(previews[20],
                               api.load_model(out / "ckpt", device="cpu").task.preview())
    assert previews[40].min() >= 0  # phase 2: a residual map
    card = read_card(out / "ckpt")
    assert card["task"] == "anomaly" and set(card["nets"]) == {"G", "G_ema", "D", "E"}
    assert len(card["loss_history"]["loss_d"]) == 20
    assert len(card["loss_history"]["loss_e"]) == 20


def test_holes_in_held_out_white_matter_light_up(trained, real_dir):
    out, _ = trained
    image, truth = plant_holes(real_dir, out)
    result = api.apply(out / "ckpt", image)
    t1 = read_volume(image)
    assert result.tensor.shape == t1.tensor.shape
    np.testing.assert_allclose(result.affine, t1.affine)
    assert result.tensor.min() >= 0 and torch.isfinite(result.tensor).all()

    report = api.evaluate(out / "ckpt", [image], mask=[truth])
    mean = report["mean"]
    assert report["task"] == "anomaly" and report["n_volumes"] == 1
    assert {"auroc", "auprc", "dice_best", "score_volume"} <= set(mean)
    # same map, same mask, without the holes: how much the place alone explains
    normal = api.evaluate(out / "ckpt", [real_dir / "t1_b.nii.gz"], mask=[truth])["mean"]
    prevalence = float(read_volume(truth).tensor.float().mean())
    print(f"anomaly: lesioned {mean}; unlesioned auroc {normal['auroc']:.3f}")
    assert mean["auroc"] >= 0.8  # a constant map scores 0.5
    assert mean["auroc"] >= normal["auroc"] + 0.15
    assert mean["auprc"] > 3 * prevalence  # a constant map scores the prevalence
    assert mean["dice_best"] > 0.1  # marking every voxel scores 2p / (1 + p) ≈ 0.02
    assert mean["score_volume"] > 0


def test_an_anomaly_model_does_not_synthesize(trained):
    out, _ = trained
    with pytest.raises(CheckpointError, match="can't synthesize"):
        api.synthesize(out / "ckpt", n=1)


def test_resume_across_the_phase_boundary_repeats_the_run(tiny_config, tmp_path):
    def config(steps, encoder_fraction=0.5):
        c = tiny_config(
            steps=steps,
            checkpoint_every=100,
            preview_every=100,
            loss="wgan-gp",
            n_critic=2,
            encoder_fraction=encoder_fraction,
        )
        c.task = "anomaly"
        return c

    whole = [e.losses for e in api.train(config(6), tmp_path / "whole") if e.kind == "step"]
    stop = threading.Event()
    for event in api.train(config(6), tmp_path / "part", stop=stop):
        if event.step == 2:  # phase 1 (steps 1–3)
            stop.set()
    assert read_card(tmp_path / "part")["step"] == 2
    volume = api.read_volume(tiny_config().data.paths[0])
    with pytest.raises(CheckpointError, match="before its encoder was trained"):
        api.apply(tmp_path / "part", volume)
    resumed = [
        e
        for e in api.train(config(6), tmp_path / "part", resume=tmp_path / "part")
        if e.kind == "step"
    ]
    assert [e.step for e in resumed] == [3, 4, 5, 6]
    assert set(resumed[0].losses) == GAN_KEYS
    assert all(set(e.losses) == ENCODER_KEYS for e in resumed[1:])
    assert [e.losses for e in resumed] == whole[2:]
    a, b = load_checkpoint(tmp_path / "whole").weights, load_checkpoint(tmp_path / "part").weights
    assert all(torch.equal(a[k], b[k]) for k in a)
    # asking for more steps later moves the boundary (to 7 of 8 here), but the encoder
    # phase, once begun, goes on
    more = [
        e
        for e in api.train(
            config(8, encoder_fraction=0.1), tmp_path / "part", resume=tmp_path / "part"
        )
        if e.kind == "step"
    ]
    assert gan_steps(8, 0.1) == 7
    assert [set(e.losses) for e in more] == [ENCODER_KEYS, ENCODER_KEYS]


def test_settings_the_method_cannot_use_are_refused(real_dir, tmp_path):
    with pytest.raises(ConfigError, match="wgan-gp"):
        list(api.train(anomaly_config(real_dir, loss="hinge"), tmp_path / "a"))
    with pytest.raises(ConfigError, match="encoder_fraction"):
        list(api.train(anomaly_config(real_dir, encoder_fraction=1.0), tmp_path / "b"))
    config = anomaly_config(real_dir)
    config.model.d_norm = "batch"  # Config.validate refuses it too; the task on its own as well
    with pytest.raises(ConfigError, match="d_norm"):
        AnomalyTask(config, torch.device("cpu"))


def test_phases_split_the_steps_and_the_encoder_inverts_the_generator_shape():
    assert gan_steps(40, 0.5) == 20 and gan_steps(10, 0.4) == 6
    assert gan_steps(2, 0.99) == 1 and gan_steps(2, 0.01) == 1 and gan_steps(1, 0.5) == 1
    x = torch.randn(3, 1, 16, 16, 16)
    encoder = DCGANEncoder3D(1, latent_dim=8, patch_size=16, channels=4, max_channels=16)
    assert encoder(x).shape == (3, 8)
    critic = DCGANDiscriminator3D(1, 16, 4, 16, norm="none")
    assert critic.features(x).shape == (3, 8 * 4**3)
