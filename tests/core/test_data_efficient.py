"""Data-efficient GAN training (#10): DiffAugment, R1 and residual nets in a real training run."""

import json

import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.checkpoint import load_checkpoint, read_card
from napari_medgan.core.errors import ConfigError
from napari_medgan.core.losses import r1_penalty
from napari_medgan.core.nets.dcgan import ResidualBlock3D
from napari_medgan.core.nets.patchgan import PatchGAN3D
from napari_medgan.core.tasks.synthesis import SynthesisTask

EVERY_SWITCH = {"diff_augment": ["intensity", "flip", "translation", "cutout"],
                "r1_weight": 1.0, "r1_every": 2}


def with_every_switch(tiny_config, **train):
    config = tiny_config(**EVERY_SWITCH, **train)
    config.model.g_residual = config.model.d_residual = True
    config.model.local_d_channels = 4
    return config


def step_losses(config, out):
    return [e.losses for e in api.train(config, out) if e.kind == "step"]


def residual_blocks(net):
    return sum(isinstance(module, ResidualBlock3D) for module in net.modules())


def test_a_run_with_every_switch_on_trains_saves_loads_and_synthesizes(tiny_config, tmp_path):
    losses = step_losses(with_every_switch(tiny_config), tmp_path / "ckpt")
    assert len(losses) == 4
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses)
    card = read_card(tmp_path / "ckpt")
    assert card["config"]["train"]["diff_augment"] == EVERY_SWITCH["diff_augment"]
    assert card["config"]["model"]["g_residual"] and card["config"]["model"]["d_residual"]
    model = api.load_model(tmp_path / "ckpt", device="cpu")
    assert residual_blocks(model.task.nets["G_ema"]) == 2  # at 4³ and 8³ of a 16³ patch
    assert residual_blocks(model.task.nets["D"]) == 2
    assert isinstance(model.task.nets["D_local"], PatchGAN3D)
    saved = load_checkpoint(tmp_path / "ckpt").weights
    assert any(key.startswith("D_local.") for key in saved)
    loaded = model.task.weights()
    assert any(".body." in key for key in saved) and set(saved) == set(loaded)
    assert all(torch.equal(saved[key], loaded[key].cpu()) for key in saved)
    patches = api.synthesize(model, n=2)
    assert [p.tensor.shape for p in patches] == [(1, 16, 16, 16)] * 2
    assert all(torch.isfinite(p.tensor).all() for p in patches)
    assert not torch.equal(patches[0].tensor, patches[1].tensor)


def test_each_switch_changes_training_and_synthesis_defaults_to_r1(tiny_config, tmp_path):
    plain = step_losses(tiny_config(r1_weight=0.0), tmp_path / "plain")
    assert plain == step_losses(tiny_config(diff_augment=[], r1_weight=0.0), tmp_path / "same")
    for name, value in (("diff_augment", ["translation"]), ("r1_weight", 10.0)):
        switched = tiny_config(**{"r1_weight": 0.0, name: value})
        assert step_losses(switched, tmp_path / name) != plain, name
    local = tiny_config(r1_weight=0.0)
    local.model.local_d_channels = 4
    assert step_losses(local, tmp_path / "local") != plain
    # not set: synthesis's measured default, R1 with γ = 1 (bench/README.md)
    default = step_losses(tiny_config(), tmp_path / "default")
    assert default == step_losses(tiny_config(r1_weight=1.0), tmp_path / "one") != plain


def test_the_r1_default_is_synthesis_only_and_never_with_wgan_gp():
    config = api.Config()
    assert config.train.r1_weight is None and config.r1_weight == 1.0
    config.task = "anomaly"  # wgan-gp: its own gradient penalty
    assert config.r1_weight == 0.0
    config.task = "segmentation"
    config.validate()  # an unset R1 weight is no switch a conditional task refuses
    assert config.r1_weight == 0.0


def test_a_checkpoint_from_before_the_switches_loads_with_plain_nets(tiny_config, tmp_path):
    old = tiny_config()
    old.model.local_d_channels = 0  # as every net was then
    step_losses(old, tmp_path / "old")
    card_path = tmp_path / "old" / "card.json"
    card = json.loads(card_path.read_text())
    for field in ("g_residual", "d_residual", "local_d_channels"):
        del card["config"]["model"][field]
    for field in ("diff_augment", "r1_weight", "r1_every"):
        del card["config"]["train"][field]
    card_path.write_text(json.dumps(card))
    model = api.load_model(tmp_path / "old", device="cpu")
    assert residual_blocks(model.task.nets["G_ema"]) == residual_blocks(model.task.nets["D"]) == 0
    assert "D_local" not in model.task.nets
    assert model.card["config"]["train"]["diff_augment"] == []
    assert len(api.synthesize(model, n=1)) == 1


def test_a_local_critic_from_before_its_levels_were_set_loads_with_one_level(tiny_config,
                                                                              tmp_path):
    config = tiny_config()
    config.model.local_d_channels, config.model.local_d_layers = 4, 1
    step_losses(config, tmp_path / "old")
    card_path = tmp_path / "old" / "card.json"
    card = json.loads(card_path.read_text())
    del card["config"]["model"]["local_d_layers"]
    card_path.write_text(json.dumps(card))
    model = api.load_model(tmp_path / "old", device="cpu")  # its weights fit a 1-level critic
    assert model.card["config"]["model"]["local_d_layers"] == 1
    assert model.task.nets["D_local"](torch.zeros(1, 1, 16, 16, 16)).shape[2:] == (6, 6, 6)
    assert api.Config().model.local_d_layers == 2  # a new config's default is unchanged


def test_synthesis_defaults_to_the_measured_model_and_other_tasks_to_no_local_critic():
    config = api.Config()
    assert config.task == "synthesis" and config.model.local_d_channels is None
    task = SynthesisTask(config, torch.device("cpu"))
    assert config.local_d_channels == 16 and isinstance(task.nets["D_local"], PatchGAN3D)
    # two levels: 6³ logits a 32³ patch, each judging a 34³ neighbourhood (with padding)
    assert task.nets["D_local"](torch.zeros(1, 1, 32, 32, 32)).shape[2:] == (6, 6, 6)
    upsampling = [m for m in task.nets["G"].modules() if isinstance(m, torch.nn.Upsample)]
    assert upsampling and all(m.mode == "trilinear" for m in upsampling)
    assert (config.model.latent_dim, config.model.g_channels, config.model.d_channels,
            config.model.max_channels) == (64, 8, 16, 128)  # demo/demo_config.yaml's until now
    config.model.patch_size = 8  # smaller than two levels take: no local critic, no error
    config.validate()
    assert config.local_d_channels == 0
    config.model.local_d_channels = 16  # asked for, it is refused with the reason
    with pytest.raises(ConfigError, match="local_d_layers 2 needs patches of at least 12"):
        config.validate()
    anomaly = api.Config(task="anomaly")  # wgan-gp refuses a local critic
    anomaly.validate()
    assert anomaly.local_d_channels == 0
    anomaly.train.loss = "nonsaturating"
    assert anomaly.local_d_channels == 0  # measured for synthesis only


def test_synthesis_critics_learn_at_twice_g_rate_unless_the_config_says_otherwise():
    config = api.Config()
    assert config.train.lr_d is None and config.lr_d == 4e-4 == 2 * config.train.lr_g
    task = SynthesisTask(config, torch.device("cpu"))
    assert {name: opt.param_groups[0]["lr"] for name, opt in task.optimizers.items()} == {
        "G": 2e-4, "D": 4e-4, "D_local": 4e-4}
    for other in ("anomaly", "translation", "inpainting", "segmentation", "cycle"):
        assert api.Config(task=other).lr_d == 2e-4, other  # their recipes' own rate
    config.train.lr_d = 1e-4
    assert config.lr_d == 1e-4


def test_a_card_from_before_the_new_defaults_loads_with_the_nets_it_was_trained_with(
        tiny_config, tmp_path):
    config = tiny_config(steps=1)
    m = config.model
    m.latent_dim, m.g_channels, m.d_channels, m.max_channels = 128, 32, 32, 256
    m.upsample, m.local_d_channels = "transpose", 0
    step_losses(config, tmp_path / "old")
    card_path = tmp_path / "old" / "card.json"
    card = json.loads(card_path.read_text())
    for field in ("latent_dim", "g_channels", "d_channels", "max_channels", "upsample",
                  "local_d_channels"):
        del card["config"]["model"][field]
    card_path.write_text(json.dumps(card))
    model = api.load_model(tmp_path / "old", device="cpu")
    assert model.card["config"]["model"]["upsample"] == "transpose"
    assert "D_local" not in model.task.nets
    assert model.task.nets["G_ema"].latent_dim == 128
    assert api.synthesize(model, n=1)[0].tensor.shape == (1, 16, 16, 16)


def test_lazy_r1_acts_every_r1_every_critic_steps_weighted_by_it(tiny_config):
    config = tiny_config(r1_weight=2.0, r1_every=3)
    task = SynthesisTask(config, torch.device("cpu"))
    D = task.nets["D"]
    real = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    full = 0.5 * 2.0 * 3 * r1_penalty(D, real)
    terms = [task.r1_term(D, real, k) for k in range(6)]
    assert full > 0
    assert [bool(t != 0) for t in terms] == [True, False, False, True, False, False]
    assert torch.isclose(terms[0], full) and torch.isclose(terms[3], full)


def test_the_anomaly_task_trains_its_gan_phase_with_the_switches(tiny_config, tmp_path):
    config = tiny_config(diff_augment=["translation", "cutout"], steps=4, n_critic=2,
                         encoder_fraction=0.5)
    config.task = "anomaly"  # loss auto: wgan-gp, so no R1
    config.model.g_residual = config.model.d_residual = True
    losses = step_losses(config, tmp_path / "ckpt")
    assert [set(step) for step in losses[:2]] == [{"loss_d", "loss_g"}] * 2
    assert "loss_e" in losses[-1]
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses)
    model = api.load_model(tmp_path / "ckpt", device="cpu")
    assert residual_blocks(model.task.nets["D"]) == 2


def test_the_local_critic_judges_every_neighbourhood_and_trains_beside_d(tiny_config):
    torch.manual_seed(0)
    config = tiny_config(r1_weight=0.0)
    config.model.local_d_channels = 4
    patches = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    # by default two levels: one logit per 34³ neighbourhood, 2³ of them in a 16³ patch
    assert SynthesisTask(config, torch.device("cpu")).nets["D_local"](patches).shape == (
        2, 1, 2, 2, 2)
    config.model.local_d_layers = 1  # 16³ neighbourhoods: locality shows within a 16³ patch
    task = SynthesisTask(config, torch.device("cpu"))
    local = task.nets["D_local"]
    logits = local(patches)
    assert logits.shape[0] == 2 and logits.shape[2:] == (6, 6, 6)  # one per neighbourhood
    # each logit's convolutions see a neighbourhood, not the whole patch: a change in one
    # corner moves that corner's logits, the far corner's only through the instance
    # normalisation's statistics (under half as much for every seed 0–199 tried)
    changed = patches.clone()
    changed[:, :, :4, :4, :4] = 1.0
    moved = (local(changed) - logits).abs()
    assert moved[..., -1, -1, -1].mean() < 0.5 * moved[..., 0, 0, 0].mean()
    before = {name: [p.clone() for p in task.nets[name].parameters()] for name in ("D", "D_local")}
    data = {"image": patches}
    task.train_step(lambda: data, 1)
    for name, old in before.items():  # one critic step trains both critics
        now = task.nets[name].parameters()
        assert any(not torch.equal(a, b) for a, b in zip(old, now, strict=True)), name
