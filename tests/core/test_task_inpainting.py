"""The inpainting task the way a face drives it: train, fill a hole in a held-out volume, score."""

import json

import numpy as np
import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.data.io import write_volume
from napari_medgan.core.errors import DataError
from napari_medgan.core.tasks.inpainting import InpaintingTask

HOLE = (slice(14, 26),) * 3  # a 12³ box in the middle of the 40³ crops


def inpainting_config(make, steps: int, **data) -> api.Config:
    config = make("inpainting", steps, **data)
    config.train.preview_every = 10
    return config


def write_mask(volume: api.Volume, path, region=HOLE) -> str:
    mask = torch.zeros((1, *volume.spatial_shape), dtype=torch.uint8)
    mask[(0, *region)] = 1
    write_volume(api.Volume(mask, volume.affine, path.stem), path)
    return str(path)


@pytest.fixture(scope="module")
def trained(conditional_config, real_dir, tmp_path_factory):
    """One tiny inpainter trained on t1_a with random box holes, and a hole mask for t1_b."""
    out = tmp_path_factory.mktemp("inpainting")
    events = list(api.train(inpainting_config(conditional_config, steps=30), out / "ckpt"))
    held_out = api.read_volume(real_dir / "t1_b.nii.gz")
    return {
        "ckpt": out / "ckpt",
        "events": events,
        "volume": held_out,
        "file": real_dir / "t1_b.nii.gz",
        "hole": write_mask(held_out, out / "hole_b.nii"),
    }


def test_training_on_random_holes_reports_the_hole_loss_and_previews(trained):
    steps = [e for e in trained["events"] if e.kind == "step"]
    assert len(steps) == 30
    assert all(set(e.losses) == {"loss_d", "loss_g", "l1_hole"} for e in steps)
    assert all(np.isfinite(list(e.losses.values())).all() for e in steps)
    first = np.mean([e.losses["l1_hole"] for e in steps[:5]])
    last = np.mean([e.losses["l1_hole"] for e in steps[-5:]])
    print(f"l1_hole (normalised units): first 5 steps {first:.3f}, last 5 steps {last:.3f}")
    assert last < 0.85 * first
    preview = steps[9].preview
    assert preview is not None and preview.tensor.shape == (1, 16, 16, 16)
    card = json.loads((trained["ckpt"] / "card.json").read_text())
    assert card["task"] == "inpainting" and set(card["nets"]) == {"G", "D"}


def test_a_held_out_hole_is_filled_better_than_the_mean_and_the_rest_is_untouched(trained):
    volume = trained["volume"]
    result = api.apply(trained["ckpt"], trained["file"], mask=trained["hole"], batch_size=8)
    assert result.tensor.shape == volume.tensor.shape
    np.testing.assert_allclose(result.affine, volume.affine)
    hole = torch.zeros(volume.spatial_shape, dtype=torch.bool)
    hole[HOLE] = True
    x, y = volume.tensor.float(), result.tensor.float()
    assert torch.equal(y[:, ~hole], x[:, ~hole])  # untouched, clipped intensities included
    assert not torch.equal(y[:, hole], x[:, hole])
    mae = float((y - x)[:, hole].abs().mean())
    baseline = float((x[:, ~hole].mean() - x[:, hole]).abs().mean())  # fill with the mean
    print(f"MAE in the hole: model {mae:.4f}, mean fill {baseline:.4f}")
    assert mae < 0.85 * baseline

    report = api.evaluate(trained["ckpt"], [trained["file"]], mask=[trained["hole"]], batch_size=8)
    print("evaluate:", report["mean"])
    assert report["task"] == "inpainting" and report["n_volumes"] == 1
    assert set(report["mean"]) == {"psnr_hole", "ssim_hole", "mae_hole"}
    assert report["mean"]["mae_hole"] == pytest.approx(mae, rel=1e-4)
    assert np.isfinite(report["mean"]["psnr_hole"]) and -1 <= report["mean"]["ssim_hole"] <= 1


def test_a_fill_comes_back_in_the_units_of_the_input_volume(trained):
    """MR is normalised per volume, so a scanner that scales by 3 gets a fill scaled by 3."""
    volume = trained["volume"]
    brighter = api.Volume(volume.tensor * 3, volume.affine, "brighter")
    hole = torch.zeros(volume.spatial_shape, dtype=torch.bool)
    hole[HOLE] = True
    plain = api.apply(trained["ckpt"], volume, mask=trained["hole"], batch_size=8)
    scaled = api.apply(trained["ckpt"], brighter, mask=trained["hole"], batch_size=8)
    torch.testing.assert_close(
        scaled.tensor[:, hole], 3 * plain.tensor[:, hole], rtol=1e-4, atol=1e-4
    )


def test_bad_hole_masks_are_refused_with_a_reason(trained, tmp_path):
    volume, ckpt, file = trained["volume"], trained["ckpt"], trained["file"]
    model = api.load_model(ckpt)
    with pytest.raises(DataError, match="needs a mask of the region to fill"):
        api.apply(model, file)
    empty = write_mask(volume, tmp_path / "empty.nii.gz", region=(slice(0, 0),) * 3)
    with pytest.raises(DataError, match="is empty: it marks no region"):
        api.apply(model, file, mask=empty)
    full = write_mask(volume, tmp_path / "full.nii.gz", region=(slice(None),) * 3)
    with pytest.raises(DataError, match="covers the whole volume"):
        api.apply(model, file, mask=full)
    smaller = api.Volume(torch.ones((1, 32, 32, 32)), volume.affine, "small")
    small = write_mask(smaller, tmp_path / "small.nii.gz")
    with pytest.raises(DataError, match="not on the voxel grid"):
        api.apply(model, file, mask=small)
    shifted_affine = volume.affine.copy()
    shifted_affine[:3, 3] += 5.0
    shifted = write_mask(
        api.Volume(volume.tensor, shifted_affine, "shifted"), tmp_path / "shifted.nii.gz"
    )
    with pytest.raises(DataError, match="not on the voxel grid"):
        api.apply(model, file, mask=shifted)
    with pytest.raises(DataError, match="needs the true mask"):
        api.evaluate(model, [file])


def test_hole_mask_files_given_for_training_are_used(conditional_config, real_dir, tmp_path):
    training = api.read_volume(real_dir / "t1_a.nii.gz")
    masks = [write_mask(training, tmp_path / "t1_a_hole.nii.gz")]
    events = list(
        api.train(inpainting_config(conditional_config, steps=3, masks=masks), tmp_path / "ck")
    )
    assert events[-1].kind == "done"
    steps = [e for e in events if e.kind == "step"]
    assert all(np.isfinite(list(e.losses.values())).all() for e in steps)
    card = json.loads((tmp_path / "ck" / "card.json").read_text())
    assert card["data"]["mask_files"] == masks

    empty = [write_mask(training, tmp_path / "t1_a_empty.nii.gz", region=(slice(0, 0),) * 3)]
    with pytest.raises(DataError, match="is empty"):
        list(
            api.train(inpainting_config(conditional_config, steps=1, masks=empty), tmp_path / "bad")
        )


def test_random_holes_come_from_the_task_generator_and_are_boxes_of_the_set_size(
    conditional_config, real_dir
):
    config = inpainting_config(conditional_config, steps=1)
    tasks = [InpaintingTask(config, torch.device("cpu")) for _ in range(2)]
    torch.manual_seed(123)
    global_state = torch.random.get_rng_state()
    first, again = (task.random_holes(8, 16) for task in tasks)
    assert torch.equal(torch.random.get_rng_state(), global_state)  # the global RNG is left alone
    assert torch.equal(first, again)
    assert first.shape == (8, 1, 16, 16, 16) and set(first.unique().tolist()) == {0.0, 1.0}
    share = first.mean(dim=(1, 2, 3, 4))
    # at least one box of sides ≥ 20 % (3 voxels); at most three of sides ≤ 50 % (8 voxels)
    assert bool((share >= 27 / 16**3).all()) and bool((share <= 3 * 512 / 16**3).all())
    config.train.seed = 1
    assert not torch.equal(InpaintingTask(config, torch.device("cpu")).random_holes(8, 16), first)


def test_a_soft_mask_is_refused_alike_in_training_and_apply(trained, conditional_config,
                                                            real_dir, tmp_path):
    """One rule for hole masks (task_data.hole_mask): whole numbers, 0 keeps, above 0 fills."""
    soft = api.read_volume(real_dir / "gm_b.nii.gz")  # probabilities in [0, 1]
    path = str(write_volume(soft, tmp_path / "soft.nii.gz"))
    rule = r"The mask .*soft\.nii\.gz holds values other than whole numbers.*threshold it first"
    with pytest.raises(DataError, match=rule):
        api.apply(trained["ckpt"], trained["file"], mask=path)
    config = inpainting_config(conditional_config, steps=1, masks=[path])
    with pytest.raises(DataError, match=rule):
        list(api.train(config, tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()
