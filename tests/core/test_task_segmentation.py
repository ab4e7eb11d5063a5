"""Segmentation T1 → tissue labels (0 rest, 1 GM, 2 WM) on real MNI152 crops, and bad label maps."""

import json

import numpy as np
import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.errors import ConfigError, DataError
from napari_medgan.core.metrics import dice_per_label
from napari_medgan.core.tasks.segmentation import critic_ramp, scaled_truth

MARGIN = 0.15  # mean Dice over labels 1..2 the model must gain over the best constant guess


def segmentation_config(make, labels="labels_a.nii.gz", steps=40):
    return make("segmentation", steps, labels=[labels])


@pytest.fixture(scope="module")
def segmenter(conditional_config, real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("segmentation") / "ckpt"
    events = list(api.train(segmentation_config(conditional_config), out))
    assert events[-1].kind == "done"
    return out, events


def test_training_reports_its_losses_and_a_label_preview(segmenter):
    out, events = segmenter
    steps = [e for e in events if e.kind == "step"]
    # the critic is opt-in: by default no critic is trained, so there is no loss_d
    assert all(set(e.losses) == {"loss_s", "dice_loss", "ce"} for e in steps)
    assert all(np.isfinite(v) for e in steps for v in e.losses.values())
    preview = steps[-1].preview.tensor
    assert preview.shape == (1, 16, 16, 16)
    assert set(preview.unique().tolist()) <= {0.0, 1.0, 2.0}
    model = api.load_model(out, expect_task="segmentation")
    assert model.card["num_classes"] == 3 and model.task.num_classes == 3


def test_segmentation_beats_the_constant_baselines_on_a_held_out_volume(segmenter, real_dir):
    out, _ = segmenter
    t1 = read_volume(real_dir / "t1_b.nii.gz")
    result = api.apply(out, real_dir / "t1_b.nii.gz")
    assert result.tensor.dtype == torch.uint8 and result.tensor.shape == t1.tensor.shape
    np.testing.assert_allclose(result.affine, t1.affine)
    truth = read_volume(real_dir / "labels_b.nii.gz").tensor[0].long()
    assert set(result.tensor.unique().tolist()) <= {0, 1, 2}

    report = api.evaluate(out, [real_dir / "t1_b.nii.gz"], labels=[real_dir / "labels_b.nii.gz"])
    json.dumps(report)
    mean = report["mean"]
    assert report["task"] == "segmentation" and report["n_volumes"] == 1
    assert set(mean) == {"dice_1", "dice_2", "hd95_1", "hd95_2", "dice_mean"}
    model_dice = dice_per_label(result.tensor[0].long(), truth, [1, 2])
    assert mean["dice_1"] == pytest.approx(model_dice[1])
    assert mean["dice_mean"] == pytest.approx((model_dice[1] + model_dice[2]) / 2)

    # Baselines: everything background, and everything the training data's commonest label.
    training = read_volume(real_dir / "labels_a.nii.gz").tensor.long().flatten()
    majority = int(torch.bincount(training, minlength=3).argmax())
    baselines = {}
    for name, label in (("background", 0), ("majority", majority)):
        scores = dice_per_label(torch.full_like(truth, label), truth, [1, 2])
        baselines[name] = (scores[1] + scores[2]) / 2
    print(
        f"mean Dice: model {mean['dice_mean']:.3f}, all-background "
        f"{baselines['background']:.3f}, majority (label {majority}) "
        f"{baselines['majority']:.3f}; HD95 {mean['hd95_1']:.2f}, {mean['hd95_2']:.2f} mm"
    )
    assert baselines["background"] == 0.0
    assert mean["dice_mean"] > max(baselines.values()) + MARGIN
    assert 0 <= mean["hd95_1"] < 10 and 0 <= mean["hd95_2"] < 10  # mm, on a 40 mm crop


def test_evaluation_refuses_labels_the_model_does_not_know(segmenter, real_dir, tmp_path):
    out, _ = segmenter
    labels = read_volume(real_dir / "labels_b.nii.gz")
    extra = labels.tensor.clone()
    extra[0, :5, :5, :5] = 3
    write_volume(Volume(extra.to(torch.uint8), labels.affine, "four"), tmp_path / "four.nii.gz")
    with pytest.raises(DataError, match=r"four holds label 3.*only 3 classes"):
        api.evaluate(out, [real_dir / "t1_b.nii.gz"], labels=[tmp_path / "four.nii.gz"])
    halves = labels.tensor.clone()
    halves[0, :5, :5, :5] = 0.5
    write_volume(Volume(halves, labels.affine, "halves"), tmp_path / "halves.nii.gz")
    with pytest.raises(DataError, match="halves holds non-integer values"):
        api.evaluate(out, [real_dir / "t1_b.nii.gz"], labels=[tmp_path / "halves.nii.gz"])


def test_training_refuses_non_integer_and_empty_label_maps(conditional_config, real_dir, tmp_path):
    labels = read_volume(real_dir / "labels_a.nii.gz")
    gm = read_volume(real_dir / "gm_a.nii.gz")  # a probability map given as labels
    write_volume(gm, tmp_path / "probabilities.nii.gz")
    config = segmentation_config(conditional_config, steps=1)
    config.data.labels = [str(tmp_path / "probabilities.nii.gz")]
    with pytest.raises(DataError, match=r"probabilities\.nii\.gz holds non-integer values"):
        list(api.train(config, tmp_path / "c"))
    write_volume(
        Volume(torch.zeros_like(labels.tensor).to(torch.uint8), labels.affine, "empty"),
        tmp_path / "empty.nii.gz",
    )
    config.data.labels = [str(tmp_path / "empty.nii.gz")]
    with pytest.raises(DataError, match=r"empty\.nii\.gz is empty"):
        list(api.train(config, tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_resuming_keeps_the_classes_and_refuses_label_maps_with_more(
    conditional_config, real_dir, tmp_path
):
    list(api.train(segmentation_config(conditional_config, steps=1), tmp_path / "ckpt"))
    resumed = list(
        api.train(
            segmentation_config(conditional_config, steps=2),
            tmp_path / "ckpt",
            resume=tmp_path / "ckpt",
        )
    )
    assert [e.step for e in resumed if e.kind == "step"] == [2]
    labels = read_volume(real_dir / "labels_a.nii.gz")
    extra = labels.tensor.clone()
    extra[0, :5, :5, :5] = 3
    write_volume(Volume(extra.to(torch.uint8), labels.affine, "four"), tmp_path / "four.nii.gz")
    config = segmentation_config(conditional_config, steps=3)
    config.data.labels = [str(tmp_path / "four.nii.gz")]
    with pytest.raises(ConfigError, match="knows 3 classes but these label maps hold 4"):
        list(api.train(config, tmp_path / "ckpt", resume=tmp_path / "ckpt"))


def test_the_critic_term_is_off_during_the_warm_up_then_ramped_in():
    ramp = [critic_ramp(step, 100, 0.25) for step in range(1, 101)]
    assert ramp[:25] == [0.0] * 25  # steps 1..25: Dice + CE alone
    assert ramp[37] == pytest.approx(13 / 25)  # step 38: halfway up
    assert ramp[49:] == [1.0] * 51  # full weight from step 50
    assert all(b >= a for a, b in zip(ramp, ramp[1:], strict=False))
    assert critic_ramp(1, 100, 0.0) == 1.0  # no warm-up: the old behaviour


def test_scaled_truth_leaves_the_critic_nothing_but_where_the_labels_are():
    generator = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 3, (2, 4, 4, 4), generator=generator)
    onehot = torch.nn.functional.one_hot(classes, 3).movedim(-1, 1).float()
    probs = torch.randn(2, 3, 4, 4, 4, generator=generator).mul(3).softmax(1)
    real = scaled_truth(onehot, probs)
    torch.testing.assert_close(real.sum(1), torch.ones(2, 4, 4, 4))
    assert torch.equal(real.argmax(1), classes)
    p_true = (probs * onehot).sum(1)
    assert torch.all((real * onehot).sum(1) >= torch.clamp(p_true, min=0.9) - 1e-6)
    # where the segmenter is already right and sure, real and fake are the same map
    sure = p_true >= 0.9
    assert sure.any()
    torch.testing.assert_close(real.movedim(1, -1)[sure], probs.movedim(1, -1)[sure])
    # unlike one-hot truth, scaled truth is never exactly 0 where the segmenter isn't
    assert (real > 0).all()


def test_the_opt_in_critic_trains_and_its_term_waits_for_the_warm_up(
    conditional_config, real_dir, tmp_path
):
    config = segmentation_config(conditional_config, steps=4)
    assert config.train.segmentation_critic is False  # the default: no critic
    config.train.segmentation_critic = True
    config.train.critic_warmup = 0.5
    steps = [e for e in api.train(config, tmp_path / "c") if e.kind == "step"]
    assert all(set(e.losses) == {"loss_d", "loss_s", "dice_loss", "ce"} for e in steps)
    # warm-up (steps 1, 2): the segmenter's loss is Dice + CE alone; then the critic's term
    for e in steps[:2]:
        assert e.losses["loss_s"] == pytest.approx(e.losses["dice_loss"] + e.losses["ce"])
    assert steps[3].losses["loss_s"] > steps[3].losses["dice_loss"] + steps[3].losses["ce"]
    card = json.loads((tmp_path / "c" / "card.json").read_text())
    assert card["config"]["train"]["critic_real"] == "scaled"


def test_a_checkpoint_from_before_the_critic_settings_still_applies(segmenter, real_dir, tmp_path):
    import shutil

    out, _ = segmenter
    old = tmp_path / "old"
    shutil.copytree(out, old)
    card = json.loads((old / "card.json").read_text())
    for name in ("segmentation_critic", "critic_warmup", "critic_real"):
        del card["config"]["train"][name]  # as a card written before issue #10 part 7
    (old / "card.json").write_text(json.dumps(card))
    model = api.load_model(old, expect_task="segmentation")
    assert model.task.config.train.segmentation_critic is False
    assert torch.equal(api.apply(old, real_dir / "t1_b.nii.gz").tensor,
                       api.apply(out, real_dir / "t1_b.nii.gz").tensor)
