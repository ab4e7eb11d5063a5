"""The api as a face uses it: load a checkpoint, synthesize, evaluate."""

import json
import shutil

import numpy as np
import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.checkpoint import CARD_FILE
from napari_medgan.core.errors import CheckpointError, DataError


@pytest.fixture(scope="module")
def trained(real_dir, tmp_path_factory):
    """One tiny MR model and one tiny CT model, trained once for the module."""

    out = tmp_path_factory.mktemp("models")
    models = {}
    for name, file, modality in (("mr", "t1_a.nii.gz", "mr"), ("ct", "ct_a.nii.gz", "ct")):
        config = api.Config()
        config.data.paths = [str(real_dir / file)]
        config.data.modality = modality
        config.model.patch_size, config.model.latent_dim = 16, 8
        config.model.g_channels = config.model.d_channels = 4
        config.train.steps, config.train.batch_size, config.train.device = 3, 2, "cpu"
        list(api.train(config, out / name))
        models[name] = out / name
    return models


def test_synthesis_keeps_spacing_and_the_same_seed_gives_the_same_volumes(trained):
    model = api.load_model(trained["mr"])
    first = api.synthesize(model, n=3, seed=5)
    again = api.synthesize(trained["mr"], n=3, seed=5)  # a path works too
    other = api.synthesize(model, n=3, seed=6)
    assert len(first) == 3 and first[0].tensor.shape == (1, 16, 16, 16)
    assert all(torch.equal(a.tensor, b.tensor) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0].tensor, other[0].tensor)
    np.testing.assert_allclose(first[0].spacing, model.card["spacing"])


def test_synthesized_ct_comes_back_in_hounsfield_units(trained):
    model = api.load_model(trained["ct"])
    assert model.card["modality"] == "ct"
    values = torch.cat([v.tensor.flatten() for v in api.synthesize(model, n=4, seed=0)])
    assert values.min() >= -1000 - 1e-3 and values.max() <= 1000 + 1e-3
    assert values.max() - values.min() > 2.0  # HU, not the normalised [-1, 1]


def test_synthesized_mr_comes_back_in_the_training_units(trained):
    model = api.load_model(trained["mr"])
    low, high = model.normalization.low, model.normalization.high
    values = torch.cat([v.tensor.flatten() for v in api.synthesize(model, n=4, seed=0)])
    assert values.min() >= low - 1e-4 and values.max() <= high + 1e-4


def test_evaluate_reports_quality_and_memorisation(trained, real_dir):
    report = api.evaluate(trained["mr"], [real_dir / "t1_b.nii.gz"], n=16)
    json.dumps(report)
    for key in ("mmd_synthetic_vs_held_out", "mmd_held_out_halves",
                "ms_ssim_diversity_synthetic", "memorisation_fraction_suspiciously_close",
                "memorisation_expected_share", "memorisation_suspicious_above",
                "hf_power_ratio", "c2st_p_value_vs_training", "c2st_p_value_vs_held_out"):
        assert key in report
    assert list(report)[:3] == ["c2st_auc_vs_training", "c2st_auc_vs_held_out",
                                "c2st_auc_real_vs_real"]  # realism first
    assert all(0 <= report[k] <= 1 for k in list(report)[:5])
    assert set(report["tissue_w1"]) == {"dark", "middle", "bright"}
    assert 0 <= report["ms_ssim_diversity_held_out"] <= 1
    # the share's reference: n new real patches of the training region
    assert report["memorisation_n_training_fresh"] == 16
    assert 0 <= report["memorisation_training_region_share"] <= 1


def test_evaluate_says_when_training_files_are_gone(trained, real_dir, tmp_path):
    moved = tmp_path / "ckpt"
    shutil.copytree(trained["mr"], moved)
    card = json.loads((moved / CARD_FILE).read_text())
    card["data"]["files"] = [str(tmp_path / "gone.nii.gz")]
    (moved / CARD_FILE).write_text(json.dumps(card))
    report = api.evaluate(moved, [real_dir / "t1_b.nii.gz"], n=8)
    assert "memorisation_fraction_suspiciously_close" not in report
    assert "c2st_auc_vs_training" not in report and "c2st_auc_vs_held_out" in report
    assert "not on disk" in report["notes"][0] and "realism" in report["notes"][0]


def test_evaluate_takes_training_patches_inside_the_masks_on_the_card(trained, real_dir,
                                                                     tmp_path):
    from napari_medgan.core.data.io import read_volume, write_volume

    empty = read_volume(real_dir / "t1_a.nii.gz")
    empty.tensor.zero_()
    mask = write_volume(empty, tmp_path / "t1_a_mask.nii.gz")
    edited = _edited_copy(trained["mr"], tmp_path,
                          lambda card: card["data"].update(masks=[str(mask)]))
    with pytest.raises(DataError, match="mask .* is empty"):  # the card's mask is read
        api.evaluate(edited, [real_dir / "t1_b.nii.gz"], n=8)
    mask.unlink()  # a mask that is gone: the whole training volume, as before
    assert "c2st_auc_vs_training" in api.evaluate(edited, [real_dir / "t1_b.nii.gz"], n=8)


def _edited_copy(source, tmp_path, edit):
    target = tmp_path / "edited"
    shutil.copytree(source, target)
    card = json.loads((target / CARD_FILE).read_text())
    edit(card)
    (target / CARD_FILE).write_text(json.dumps(card))
    return target


def test_a_checkpoint_of_another_task_is_refused(trained, tmp_path):
    with pytest.raises(CheckpointError, match="needs a 'segmentation' model"):
        api.load_model(trained["mr"], expect_task="segmentation")
    unknown = _edited_copy(trained["mr"], tmp_path, lambda c: c.update(task="teleport"))
    with pytest.raises(CheckpointError, match="Unknown task 'teleport'"):
        api.load_model(unknown)


def test_weights_that_do_not_match_the_card_are_refused(trained, tmp_path):
    def widen(card):
        card["config"]["model"]["g_channels"] = 8

    with pytest.raises(CheckpointError, match="has shape"):
        api.load_model(_edited_copy(trained["mr"], tmp_path, widen))


class BackgroundOrTissue(torch.nn.Module):
    """A generator of flat patches: tissue (0.5) where the noise's first value exceeds
    ``above``, background (−1) elsewhere; ``above`` 0 gives half of each."""

    def __init__(self, side: int, above: float) -> None:
        super().__init__()
        self.side, self.above = side, above

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        value = torch.where(z[:, 0] > self.above, 0.5, -1.0)
        return value.view(-1, 1, 1, 1, 1).expand(-1, 1, *(self.side,) * 3).clone()


def test_evaluate_sets_aside_synthetic_patches_centred_on_background(trained, real_dir):
    """The real patches are centred on tissue; synthetic ones centred on background (a
    model trained on patches anywhere draws them) would give the sets away by that alone."""
    model = api.load_model(trained["mr"])
    model.task.nets["G_ema"] = BackgroundOrTissue(model.patch_size, above=0.0)
    kept, share = api._foreground_centred_samples(model, 16, seed=0)
    assert kept.shape == (16, 1, 16, 16, 16) and bool((kept == 0.5).all())
    assert 0.25 < share < 0.75  # about half were background
    again, _ = api._foreground_centred_samples(model, 16, seed=0)
    assert torch.equal(kept, again)  # seeded
    report = api.evaluate(model, [real_dir / "t1_b.nii.gz"], n=16)
    assert report["synthetic_background_share"] == share
    assert any("set aside" in note for note in report["notes"])
    model.task.nets["G_ema"] = BackgroundOrTissue(model.patch_size, above=10.0)  # none
    with pytest.raises(DataError, match="draws mostly background"):
        api.evaluate(model, [real_dir / "t1_b.nii.gz"], n=16)


def test_a_model_drawing_tissue_centred_patches_is_evaluated_on_its_first_draw(trained):
    model = api.load_model(trained["mr"])
    model.task.nets["G_ema"] = BackgroundOrTissue(model.patch_size, above=-10.0)  # all tissue
    kept, share = api._foreground_centred_samples(model, 16, seed=3)
    assert share == 0 and torch.equal(kept, model.task.sample(16, seed=3).cpu())
