import pytest

from napari_medgan.core.config import Config, load_config, save_config
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
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
