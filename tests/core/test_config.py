import dataclasses
from pathlib import Path

import pytest

from napari_medgan.cli import main
from napari_medgan.core import api
from napari_medgan.core.config import RANGES, Config, load_config, save_config
from napari_medgan.core.errors import ConfigError


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_config_round_trips_through_its_file(tmp_path, suffix):
    config = Config()
    config.data.paths = ["a.nii.gz", "b.nrrd"]
    config.data.ct_window = (-200.0, 300.0)
    config.model.patch_size = 64
    config.train.loss = "hinge"
    save_config(config, tmp_path / f"c{suffix}")
    assert load_config(tmp_path / f"c{suffix}") == config


def test_numbers_are_coerced_and_checked(tmp_path):
    config = Config.from_dict({"train": {"lr_g": 1, "steps": 10.0}})
    assert config.train.lr_g == 1.0 and isinstance(config.train.lr_g, float)
    assert config.train.steps == 10 and isinstance(config.train.steps, int)
    with pytest.raises(ConfigError, match="whole number"):
        Config.from_dict({"train": {"steps": 2.5}})
    with pytest.raises(ConfigError, match="must be a number"):
        Config.from_dict({"train": {"batch_size": "eight"}})
    with pytest.raises(ConfigError, match="true or false"):
        Config.from_dict({"train": {"amp": "yes"}})


def test_unknown_keys_and_sections_are_named():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stpes'\]"):
        Config.from_dict({"train": {"stpes": 3}})
    with pytest.raises(ConfigError, match="unknown section"):
        Config.from_dict({"optimiser": {}})


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("model", "patch_size", 48, "power of two"),
        ("train", "loss", "magic", "train.loss"),
        ("data", "sampler", "gpu", "data.sampler"),
        ("data", "ct_window", [100, -100], "low < high"),
        ("data", "mr_percentiles", [50, 120], "0 <= low < high <= 100"),
        ("train", "batch_size", 0, "at least 1"),
        ("train", "ema_decay", 1.0, "ema_decay"),
        # large volumes and speed switches (#11)
        ("model", "patch_size", 512, "model.patch_size"),
        ("model", "activation_checkpointing", "yes", "model.activation_checkpointing"),
        ("train", "compile", "fast", "train.compile"),
        ("train", "fused_adam", "maybe", "train.fused_adam"),
        ("train", "cudnn_benchmark", 1, "train.cudnn_benchmark"),
        ("train", "pin_memory", "always", "train.pin_memory"),
    ],
)
def test_settings_that_cannot_work_are_refused(section, key, value, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict({section: {key: value}})


@pytest.mark.parametrize(("task", "loss"), [("synthesis", "nonsaturating"),
                                           ("anomaly", "wgan-gp"), ("cycle", "lsgan")])
def test_the_automatic_loss_is_each_tasks_own_recipe(task, loss):
    config = Config.from_dict({"task": task})
    assert config.train.loss == "auto" and config.loss == loss
    assert Config.from_dict({"task": task, "train": {"loss": "hinge"}}).loss == "hinge"


def test_wgan_gp_gets_an_unnormalised_critic_and_five_critic_steps():
    config = Config.from_dict({"train": {"loss": "wgan-gp"}})
    assert config.d_norm == "none" and config.n_critic == 5
    assert Config().d_norm == "batch" and Config().n_critic == 1
    with pytest.raises(ConfigError, match="gradient penalty"):
        Config.from_dict({"train": {"loss": "wgan-gp"}, "model": {"d_norm": "batch"}})


def test_config_files_that_are_missing_or_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "twice.yaml").write_text("train:\n  steps: 3\n  lr_g: 0.001\n  steps: 5\n")
    with pytest.raises(ConfigError, match=r"steps is given twice \(line 4, column 3\)"):
        load_config(tmp_path / "twice.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


@pytest.mark.parametrize("text", ["train: {steps: 3\n", "train:\n  steps: 3\n  steps: 5\n"])
def test_a_config_file_yaml_cannot_read_is_one_line_with_its_place(tmp_path, capsys, real_dir,
                                                                     text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["train", "--config", str(path), "--data", str(real_dir / "t1_a.nii.gz"),
                 "--out", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(path) in err and "line " in err, err
    assert not (tmp_path / "ckpt").exists()


# (YAML text of a config file, the field its error must name)
BAD_FIELDS = {
    "unet_channels an int": ("model: {unet_channels: 16}", "model.unet_channels"),
    "unet_channels empty": ("model: {unet_channels: []}", "model.unet_channels"),
    "unet_channels zero": ("model: {unet_channels: [8, 0]}", "model.unet_channels[1]"),
    "ct_window one value": ("data: {ct_window: [1]}", "data.ct_window"),
    "betas one value": ("train: {betas: [0.5]}", "train.betas"),
    "betas of 1": ("train: {betas: [0.5, 1.0]}", "train.betas[1]"),
    "negative lr_g": ("train: {lr_g: -1}", "train.lr_g"),
    "zero lr_d": ("train: {lr_d: 0}", "train.lr_d"),
    "paths a string": ("data: {paths: scans/brain.nii.gz}", "data.paths"),
    "paths of numbers": ("data: {paths: [1, 2]}", "data.paths[0]"),
    "zero patch": ("model: {patch_size: 0}", "model.patch_size"),
    "negative channels": ("model: {g_channels: -4}", "model.g_channels"),
    "absurd latent_dim": ("model: {latent_dim: 4398046511104}", "model.latent_dim"),
    "zero batch": ("train: {batch_size: 0}", "train.batch_size"),
    "label_share above 1": ("data: {label_share: 1.5}", "data.label_share"),
    "encoder_fraction below 0": ("train: {encoder_fraction: -0.1}", "train.encoder_fraction"),
    "negative n_critic": ("train: {n_critic: -1}", "train.n_critic"),
    "negative weight": ("train: {l1_weight: -100}", "train.l1_weight"),
    "not-a-number weight": ("train: {gp_weight: .nan}", "train.gp_weight"),
    "zero queue": ("data: {queue_length: 0}", "data.queue_length"),
    "modality a list": ("data: {modality: [ct]}", "data.modality"),
    "task a number": ("task: 3", "task"),
    "section a string": ("train: fast", "train"),
    "amp a word": ("train: {amp: maybe}", "train.amp"),
    "task misspelt": ("task: segmantation", "task is 'segmantation'"),
    "device unknown": ("train: {device: tpu}", "train.device"),
    # data-efficient training (#10)
    "augmentation unknown": ("train: {diff_augment: [cutout, rotate]}", "train.diff_augment[1]"),
    "augmentation a string": ("train: {diff_augment: cutout}", "train.diff_augment"),
    "augmentation twice": ("train: {diff_augment: [cutout, cutout]}", "train.diff_augment"),
    "negative r1_weight": ("train: {r1_weight: -1}", "train.r1_weight"),
    "zero r1_every": ("train: {r1_every: 0}", "train.r1_every"),
    "r1 with wgan-gp": ("train: {r1_weight: 1, loss: wgan-gp}", "train.r1_weight"),
    "residual a word": ("model: {g_residual: yes please}", "model.g_residual"),
    "augmenting a U-Net task": ("task: translation\ntrain: {diff_augment: [cutout]}",
                                "train.diff_augment"),
    "residual in a U-Net task": ("task: segmentation\nmodel: {d_residual: true}",
                                 "model.d_residual"),
    "negative local critic": ("model: {local_d_channels: -8}", "model.local_d_channels"),
    "local critic in a U-Net task": ("task: cycle\nmodel: {local_d_channels: 8}",
                                     "model.local_d_channels"),
    "local critic with wgan-gp": ("model: {local_d_channels: 8}\ntrain: {loss: wgan-gp}",
                                  "model.local_d_channels"),
    "local critic without levels": ("model: {local_d_layers: 0}", "model.local_d_layers"),
    "local critic deeper than the patch": (
        "model: {local_d_channels: 8, local_d_layers: 3, patch_size: 16}",
        "model.local_d_layers 3 needs patches of at least 24 voxels"),
}


@pytest.mark.parametrize("case", BAD_FIELDS)
def test_a_wrong_type_or_range_names_the_field_and_the_file(tmp_path, capsys, real_dir, case):
    text, field = BAD_FIELDS[case]
    path = tmp_path / "bad config.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        api.load_config(path)
    message = str(caught.value)
    assert field in message and str(path) in message
    code = main(["train", "--config", str(path), "--data", str(real_dir / "t1_a.nii.gz"),
                 "--out", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and field in err and str(path) in err
    assert not (tmp_path / "ckpt").exists()


def test_values_set_in_code_are_checked_and_converted_too():
    config = Config()
    config.model.unet_channels = [8, 16]  # a list, as a face's widget gives it
    config.data.paths = [Path("a.nii.gz")]
    config.validate()
    assert config.model.unet_channels == (8, 16) and config.data.paths == ["a.nii.gz"]
    config.data.paths = "a.nii.gz"
    with pytest.raises(ConfigError, match="data.paths must be a list of strings"):
        config.validate()


def test_exponent_numbers_are_numbers_and_quoted_ones_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr_g: 1e-4, lr_d: 3E-5, steps: 1e3}\n")
    config = load_config(path)
    assert (config.train.lr_g, config.train.lr_d, config.train.steps) == (1e-4, 3e-5, 1000)
    path.write_text("train: {lr_g: '1e-4'}\n")
    with pytest.raises(ConfigError, match="train.lr_g must be a number, got '1e-4'"):
        load_config(path)


def test_a_bare_on_or_off_in_yaml_sets_an_on_off_switch(tmp_path):
    # YAML 1.1 reads a bare on / off as true / false
    path = tmp_path / "c.yaml"
    path.write_text("train: {channels_last: off, fused_adam: on, cudnn_benchmark: 'auto'}\n")
    config = load_config(path)
    assert (config.train.channels_last, config.train.fused_adam) == ("off", "on")
    path.write_text("train: {critic_real: on}\n")  # a choice without on / off keeps the error
    with pytest.raises(ConfigError, match="train.critic_real is True; choose one of"):
        load_config(path)


def test_a_config_nested_absurdly_deep_is_one_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("train: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


def test_every_range_names_a_real_field():
    for (section, name), _ in RANGES.items():
        assert name in {f.name for f in dataclasses.fields(section)}, (section, name)
