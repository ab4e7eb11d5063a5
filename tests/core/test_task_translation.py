"""Translation T1 → grey-matter map on real MNI152 crops, and what paired data must satisfy."""

import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.errors import CheckpointError, ConfigError, DataError


def translation_config(make, steps=60, **data):
    pair = {"targets": ["gm_a.nii.gz"], "target_modality": "mr"}
    return make("translation", steps, **{**pair, **data})


@pytest.fixture(scope="module")
def translator(conditional_config, real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("translation") / "ckpt"
    events = list(api.train(translation_config(conditional_config), out))
    assert events[-1].kind == "done"
    return out


def test_translation_learns_the_target_better_than_the_mean(
    translator, real_dir, t1_to_gm_errors
):
    model_mae, mean_mae = t1_to_gm_errors(translator)
    assert model_mae < 0.8 * mean_mae
    report = api.evaluate(translator, [real_dir / "t1_b.nii.gz"], target=[real_dir / "gm_b.nii.gz"])
    assert report["task"] == "translation" and report["n_volumes"] == 1
    assert report["mean"]["mae"] == pytest.approx(model_mae, rel=1e-4)
    assert report["mean"]["psnr"] > 0 and 0 < report["mean"]["ssim"] <= 1


def test_a_volume_smaller_than_the_patch_keeps_its_shape(translator, real_dir):
    t1 = read_volume(real_dir / "t1_b.nii.gz")
    small = Volume(t1.tensor[:, :9, :20, :5].clone(), t1.affine, "small")
    assert api.apply(translator, small, overlap=0.25).tensor.shape == (1, 9, 20, 5)


def test_apply_refuses_other_tasks_and_channel_counts(translator, real_dir, tmp_path):
    t1 = read_volume(real_dir / "t1_b.nii.gz")
    two = Volume(torch.cat([t1.tensor, t1.tensor]), t1.affine, "two")
    with pytest.raises(DataError, match="2 channel"):
        api.apply(translator, two)
    with pytest.raises(CheckpointError, match="needs a 'segmentation' model"):
        api.load_model(translator, expect_task="segmentation")
    with pytest.raises(DataError, match="--target"):
        api.evaluate(translator, [real_dir / "t1_b.nii.gz"])
    with pytest.raises(ConfigError, match="only maps one way"):
        api.apply(translator, t1, reverse=True)
    small = write_volume(Volume(t1.tensor[:, :30].clone(), t1.affine, "gm"), tmp_path / "gm.nii")
    differs = r"target .*gm.nii \(shape \(30, 40, 40\) against \(40, 40, 40\)\) is not on"
    with pytest.raises(DataError, match=differs):
        api.evaluate(translator, [real_dir / "t1_b.nii.gz"], target=[small])


def test_pairs_that_differ_in_count_or_grid_are_named(conditional_config, real_dir, tmp_path):
    config = translation_config(
        conditional_config,
        steps=1,
        targets=[str(real_dir / "gm_a.nii.gz"), str(real_dir / "gm_b.nii.gz")],
    )
    with pytest.raises(DataError, match="1 volume.* but 2 target"):
        list(api.train(config, tmp_path / "c"))
    gm = read_volume(real_dir / "gm_a.nii.gz")
    shifted = gm.affine.copy()
    shifted[:3, 3] += 5.0
    moved = write_volume(Volume(gm.tensor, shifted, "moved"), tmp_path / "t1_a.nii.gz")
    config = translation_config(conditional_config, steps=1, targets=[str(moved)])
    with pytest.raises(
        DataError,
        match=r"target .*t1_a.nii.gz .*not on the voxel grid of "
        r".*t1_a.nii.gz.*--resample-pairs",
    ):
        list(api.train(config, tmp_path / "c"))
    config.data.resample_pairs = True  # the explicit option: resample onto the volume's grid
    with pytest.warns(UserWarning, match="resampled onto the grid"):
        events = list(api.train(config, tmp_path / "c"))
    assert events[-1].kind == "done"


def test_the_wgan_gp_loss_adds_the_gradient_penalty_to_the_critic(
    conditional_config, real_dir, tmp_path
):
    first_loss_d = []
    for weight in (0.0, 10.0):  # same seed, same first batch: only the penalty differs
        config = translation_config(conditional_config, steps=1)
        config.train.loss, config.train.gp_weight = "wgan-gp", weight
        step = next(e for e in api.train(config, tmp_path / str(weight)) if e.kind == "step")
        first_loss_d.append(step.losses["loss_d"])
    assert first_loss_d[1] > first_loss_d[0] + 1e-3


def test_apply_refuses_a_volume_of_another_modality(translator, real_dir):
    ct = read_volume(real_dir / "ct_a.nii.gz")
    with_air = ct.tensor.clone()
    with_air[:, :5] = -1000.0  # a slab of air outside the head
    air = Volume(with_air, ct.affine, "ct_with_air")
    with pytest.raises(DataError, match="looks like CT .* trained on MR"):
        api.apply(translator, air)


def test_partners_of_another_shape_are_named(conditional_config, real_dir, tmp_path):
    gm = read_volume(real_dir / "gm_a.nii.gz")
    smaller = write_volume(
        Volume(gm.tensor[:, :30].clone(), gm.affine, "t1_a"), tmp_path / "t1_a.nii.gz"
    )
    config = translation_config(conditional_config, steps=1, targets=[str(smaller)])
    with pytest.raises(DataError, match=r"shape \(30, 40, 40\).*not on the voxel grid"):
        list(api.train(config, tmp_path / "c"))
