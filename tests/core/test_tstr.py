"""TSTR: segmenters trained on synthetic, real and both kinds of pairs, scored on held-out real."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.errors import ConfigError, DataError
from napari_medgan.core.tstr import patch_pools

STEPS = 5  # the real pairs' segmenter already scores Dice ≈ 0.7 after these


@pytest.fixture(scope="module")
def paired(real_dir, tmp_path_factory):
    """A tiny labelled synthesis model of t1_a whose card asks for a small U-Net."""
    out = tmp_path_factory.mktemp("tstr") / "ckpt"
    config = api.Config()
    config.data.paths = [str(real_dir / "t1_a.nii.gz")]
    config.data.labels = [str(real_dir / "labels_a.nii.gz")]
    m = config.model
    m.patch_size, m.latent_dim, m.g_channels, m.d_channels, m.max_channels = 16, 8, 4, 4, 16
    m.unet_channels, m.patchgan_channels = (8, 16, 32), 8
    config.train.steps, config.train.batch_size, config.train.device = 4, 2, "cpu"
    config.train.lr_g = 1e-3  # the segmenter's rate too
    config.train.checkpoint_every = config.train.preview_every = 100
    assert list(api.train(config, out))[-1].kind == "done"
    return out


def held_out(real_dir, **kwargs):
    return api.evaluate(kwargs.pop("model"), [real_dir / "t1_b.nii.gz"],
                        labels=[real_dir / "labels_b.nii.gz"], n=16, tstr=True, **kwargs)


def test_tstr_reports_three_dice_values_and_their_ratio(paired, real_dir):
    report = held_out(real_dir, model=paired, tstr_steps=STEPS)
    json.dumps(report)
    tstr = report["tstr"]
    print(tstr)
    assert set(tstr) == {"dice_synthetic", "dice_real", "dice_real_plus_synthetic",
                         "ratio_synthetic_to_real", "n_pairs", "steps", "notes"}
    assert tstr["n_pairs"] == 16 and tstr["steps"] == STEPS
    for key in ("dice_synthetic", "dice_real", "dice_real_plus_synthetic"):
        assert 0.0 <= tstr[key] <= 1.0
    # real pairs teach a segmenter something within this budget: above all-background (0)
    assert tstr["dice_real"] > 0.3
    assert tstr["ratio_synthetic_to_real"] == pytest.approx(
        tstr["dice_synthetic"] / tstr["dice_real"])
    assert "mmd_synthetic_vs_held_out" in report  # the rest of the evaluation is still there


def test_the_pairs_each_segmenter_learns_from_are_seeded(paired):
    model = api.load_model(paired)
    first, again, other = (patch_pools(model, 8, seed) for seed in (3, 3, 4))
    assert set(first) == {"synthetic", "real", "real_plus_synthetic"}
    for name, pool in first.items():
        assert pool["image"].shape == pool["labels"].shape
        assert pool["image"].shape[0] == (16 if name == "real_plus_synthetic" else 8)
        assert set(pool["labels"].unique().tolist()) <= {0.0, 1.0, 2.0}  # class indices
        assert all(torch.equal(pool[r], again[name][r]) for r in pool)
    assert not torch.equal(first["synthetic"]["image"], other["synthetic"]["image"])
    assert not torch.equal(first["real"]["image"], other["real"]["image"])
    assert bool((first["real"]["labels"] > 0).any())  # centred on labels, as training cut


def test_tstr_refuses_what_it_cant_use_before_training(paired, real_dir, tmp_path):
    with pytest.raises(DataError, match="--labels"):
        api.evaluate(paired, [real_dir / "t1_b.nii.gz"], n=8, tstr=True)
    labels = read_volume(real_dir / "labels_b.nii.gz")
    extra = labels.tensor.clone()
    extra[0, 0, 0, 0] = 7
    write_volume(Volume(extra, labels.affine, "t1_b"), tmp_path / "t1_b.nii.gz")
    with pytest.raises(DataError, match="label 7"):
        api.evaluate(paired, [real_dir / "t1_b.nii.gz"], labels=[tmp_path / "t1_b.nii.gz"],
                     n=8, tstr=True)
    with pytest.raises(ConfigError, match="tstr_steps=0"):
        held_out(real_dir, model=paired, tstr_steps=0)


def test_tstr_needs_a_model_with_labels_and_its_training_files(real_dir, tmp_path):
    config = api.Config()
    shutil.copy(real_dir / "t1_a.nii.gz", tmp_path / "t1_a.nii.gz")
    shutil.copy(real_dir / "labels_a.nii.gz", tmp_path / "t1_a_labels.nii.gz")
    config.data.paths = [str(tmp_path / "t1_a.nii.gz")]
    m = config.model
    m.patch_size, m.latent_dim, m.g_channels, m.d_channels, m.max_channels = 16, 8, 4, 4, 16
    config.train.steps, config.train.batch_size, config.train.device = 1, 2, "cpu"
    list(api.train(config, tmp_path / "plain"))
    with pytest.raises(ConfigError, match="trained with label maps"):
        held_out(real_dir, model=tmp_path / "plain")
    config.data.labels = [str(tmp_path / "t1_a_labels.nii.gz")]
    list(api.train(config, tmp_path / "pairs"))
    (tmp_path / "t1_a_labels.nii.gz").unlink()
    with pytest.raises(DataError, match="t1_a_labels.nii.gz is not on disk"):
        held_out(real_dir, model=tmp_path / "pairs", tstr_steps=1)
    assert torch.is_tensor(read_volume(real_dir / "labels_b.nii.gz").tensor)
