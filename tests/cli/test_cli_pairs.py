"""`medgan train --task synthesis --labels` and `medgan synthesize` writing image + label pairs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medgan.cli import main

TINY = ["--patch", "16", "--batch", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def paired(real_dir, tiny_yaml, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_pairs") / "ckpt"
    assert main(["train", "--task", "synthesis", "--data", str(real_dir / "t1_a.nii.gz"),
                 "--labels", str(real_dir / "labels_a.nii.gz"), "--steps", "2", "--config",
                 str(tiny_yaml), "--out", str(out), *TINY]) == 0
    return out


def test_synthesize_writes_each_patch_with_its_integer_label_map(paired, tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synthesize", str(paired), "--n", "2", "--seed", "3", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "synth_000.nii.gz", "synth_000_labels.nii.gz", "synth_001.nii.gz",
        "synth_001_labels.nii.gz"]
    assert capsys.readouterr().out.split() == [str(out / n) for n in (
        "synth_000.nii.gz", "synth_000_labels.nii.gz", "synth_001.nii.gz",
        "synth_001_labels.nii.gz")]
    for index in range(2):
        image = nib.load(out / f"synth_{index:03d}.nii.gz")
        labels = nib.load(out / f"synth_{index:03d}_labels.nii.gz")
        assert np.issubdtype(labels.get_data_dtype(), np.integer)
        assert labels.shape == image.shape == (16, 16, 16)
        np.testing.assert_allclose(labels.affine, image.affine)
        assert set(np.unique(np.asarray(labels.dataobj)).tolist()) <= {0, 1, 2}
        assert np.issubdtype(image.get_data_dtype(), np.floating)


def test_an_existing_label_file_is_never_replaced_without_overwrite(paired, tmp_path, capsys):
    out = tmp_path / "synth"
    out.mkdir()
    mine = out / "synth_001_labels.nii.gz"
    mine.write_bytes(b"the user's own file")
    assert main(["synthesize", str(paired), "--n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "synth_001_labels.nii.gz" in err and "--overwrite" in err
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["synth_001_labels.nii.gz"]  # nothing else
    assert main(["synthesize", str(paired), "--n", "2", "--out", str(out), "--overwrite"]) == 0
    assert np.issubdtype(nib.load(mine).get_data_dtype(), np.integer)


def test_info_names_the_classes_the_model_draws(paired, capsys):
    assert main(["info", str(paired)]) == 0
    assert "background = 0, class 1 = 1, class 2 = 2" in capsys.readouterr().out


def test_evaluate_tstr_without_held_out_labels_is_one_line(paired, real_dir, capsys):
    assert main(["evaluate", str(paired), "--data", str(real_dir / "t1_b.nii.gz"),
                 "--tstr", "--n", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--labels" in err, err
