"""`medgan train/apply/evaluate` for a conditional task, as a user types them."""

import json

import numpy as np
import pytest
import torch

from napari_medgan.cli import main
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.volume import Volume


@pytest.fixture(scope="module")
def translator(real_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_tasks")
    config = folder / "tiny.yaml"
    config.write_text("model: {unet_channels: [8, 16], patchgan_channels: 8}\n"
                      "train: {lr_g: 0.001, lr_d: 0.001}\n")
    out = folder / "ckpt"
    assert main(["train", "--task", "translation", "--data", str(real_dir / "t1_a.nii.gz"),
                 "--target", str(real_dir / "gm_a.nii.gz"), "--target-modality", "mr",
                 "--patch", "16", "--steps", "4", "--batch", "2", "--device", "cpu",
                 "--config", str(config), "--out", str(out)]) == 0
    return out


def test_apply_writes_a_volume_on_the_input_grid(translator, real_dir, tmp_path, capsys):
    out = tmp_path / "gm_pred.nrrd"
    assert main(["apply", str(translator), str(real_dir / "t1_b.nii.gz"), "--out", str(out),
                 "--overlap", "0.25", "--batch", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    written, source = read_volume(out), read_volume(real_dir / "t1_b.nii.gz")
    assert written.spatial_shape == source.spatial_shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    assert main(["apply", str(translator), str(real_dir / "t1_b.nii.gz"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_evaluate_scores_against_the_targets(translator, real_dir, capsys):
    assert main(["evaluate", str(translator), "--data", str(real_dir / "t1_b.nii.gz"),
                 "--target", str(real_dir / "gm_b.nii.gz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["mean"]) == {"psnr", "ssim", "mae"}
    assert main(["evaluate", str(translator), "--data", str(real_dir / "t1_b.nii.gz"),
                 "--target", str(real_dir / "gm_b.nii.gz")]) == 0
    assert "mean.mae" in capsys.readouterr().out


def test_synthesis_checkpoints_are_not_applied(real_dir, tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["train", "--data", str(real_dir / "t1_a.nii.gz"), "--patch", "16", "--steps",
                 "1", "--batch", "2", "--device", "cpu", "--out", str(out)]) == 0
    assert main(["apply", str(out), str(real_dir / "t1_b.nii.gz"), "--out",
                 str(tmp_path / "x.nii.gz")]) == 2
    assert "medgan synthesize" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_cfg") / "tiny.yaml"
    path.write_text("model: {unet_channels: [8, 16], patchgan_channels: 8}\n")
    return path


TINY = ["--patch", "16", "--steps", "2", "--batch", "2", "--device", "cpu"]


def test_segmentation_by_its_command_line_names(real_dir, tiny_yaml, tmp_path, capsys):
    out = tmp_path / "seg"
    assert main(["train", "--task", "segmentation", "--data", str(real_dir / "t1_a.nii.gz"),
                 "--labels", str(real_dir / "labels_a.nii.gz"), "--config", str(tiny_yaml),
                 "--out", str(out), *TINY]) == 0
    labels = tmp_path / "labels_pred.nii.gz"
    assert main(["apply", str(out), str(real_dir / "t1_b.nii.gz"), "--out", str(labels)]) == 0
    predicted = read_volume(labels).tensor
    assert set(predicted.unique().tolist()) <= {0.0, 1.0, 2.0}
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(real_dir / "t1_b.nii.gz"), "--labels",
                 str(real_dir / "labels_b.nii.gz"), "--json"]) == 0
    assert {"dice_1", "dice_2", "hd95_2"} <= set(json.loads(capsys.readouterr().out)["mean"])


def test_inpainting_apply_takes_the_hole_as_mask(real_dir, tiny_yaml, tmp_path, capsys):
    out = tmp_path / "fill"
    assert main(["train", "--task", "inpainting", "--data", str(real_dir / "t1_a.nii.gz"),
                 "--config", str(tiny_yaml), "--out", str(out), *TINY]) == 0
    filled = tmp_path / "filled.nii.gz"
    args = ["apply", str(out), str(real_dir / "t1_b.nii.gz"), "--out", str(filled)]
    assert main(args) == 2
    assert "needs a mask" in capsys.readouterr().err
    assert main([*args, "--mask", str(real_dir / "labels_b.nii.gz")]) == 0
    source, result = read_volume(real_dir / "t1_b.nii.gz"), read_volume(filled)
    hole = read_volume(real_dir / "labels_b.nii.gz").tensor > 0
    assert np.array_equal(result.tensor[~hole].numpy(), source.tensor[~hole].numpy())


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity, as strict JSON readers do."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def test_a_0_255_mask_trains_two_classes_and_keeps_its_values(real_dir, tiny_yaml, tmp_path,
                                                              capsys):
    labels = read_volume(real_dir / "labels_a.nii.gz")
    mask = Volume(((labels.tensor > 0) * 255).to(torch.uint8), labels.affine, "t1_a")
    write_volume(mask, tmp_path / "masks" / "t1_a.nii.gz")
    truth = read_volume(real_dir / "labels_b.nii.gz")
    write_volume(Volume(((truth.tensor > 0) * 255).to(torch.uint8), truth.affine, "t1_b"),
                 tmp_path / "truth" / "t1_b.nii.gz")
    out = tmp_path / "seg"
    assert main(["train", "--task", "segmentation", "--data", str(real_dir / "t1_a.nii.gz"),
                 "--labels", str(tmp_path / "masks"), "--config", str(tiny_yaml),
                 "--out", str(out), *TINY]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["num_classes"] == 2 and card["label_values"] == [0, 255]
    assert card["data"]["pairs"]["label_files"]["matched_by"] == "name"
    predicted = tmp_path / "pred.nii.gz"
    assert main(["apply", str(out), str(real_dir / "t1_b.nii.gz"), "--out", str(predicted)]) == 0
    assert set(read_volume(predicted).tensor.unique().tolist()) <= {0.0, 255.0}
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(real_dir / "t1_b.nii.gz"), "--labels",
                 str(tmp_path / "truth"), "--json"]) == 0
    report = strict_json(capsys.readouterr().out)
    assert set(report["mean"]) == {"dice_255", "hd95_255", "dice_mean"}
    assert all(v is None or 0 <= v for v in report["mean"].values())
    nulls = [k for k, v in report["mean"].items() if v is None]
    assert len(report["notes"]) >= len(nulls)
    renamed = tmp_path / "truth" / "t1_b.nii.gz"
    renamed = renamed.rename(renamed.with_name("truth_b.nii.gz"))
    assert main(["evaluate", str(out), "--data", str(real_dir / "t1_b.nii.gz"), "--labels",
                 str(renamed)]) == 0
    assert "Paired each label map with a volume by order" in capsys.readouterr().err


def test_evaluate_refuses_a_target_shifted_in_space_in_one_line(translator, real_dir, tmp_path,
                                                                capsys):
    target = read_volume(real_dir / "gm_b.nii.gz")
    moved = target.affine.copy()
    moved[:3, 3] += (50.0, 0.0, 0.0)
    write_volume(Volume(target.tensor, moved, "t1_b"), tmp_path / "t1_b.nii.gz")
    assert main(["evaluate", str(translator), "--data", str(real_dir / "t1_b.nii.gz"),
                 "--target", str(tmp_path / "t1_b.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "(origin" in err and "shape" not in err and "spacing" not in err
    assert "not on the voxel grid of" in err


def test_a_folder_with_two_dicom_series_is_one_line_naming_them(tmp_path, capsys,
                                                                write_dicom_series):
    array = (np.arange(6 * 12 * 10).reshape(6, 12, 10) % 500).astype(np.int16)
    first = write_dicom_series(tmp_path / "study", array, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    write_dicom_series(tmp_path / "study", array, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), series=2)
    assert main(["train", "--data", str(tmp_path / "study"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and first in err and "FOLDER::SERIES_UID" in err
    assert not (tmp_path / "c").exists()
