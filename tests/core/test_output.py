"""The output place: nothing the user had is replaced, a failed write keeps the old file,
and an output that can't be written is refused before any work (real small file systems)."""

from __future__ import annotations

import contextlib
import subprocess

import numpy as np
import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.data import io
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.errors import DataError, OutputError, OutputExistsError


@contextlib.contextmanager
def small_fs(folder, size: str = "64k", *options: str):
    """A real tmpfs of ``size`` at ``folder``; the test is skipped where mounting is refused."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join((f"size={size}", *options)),
                            "tmpfs", str(folder)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"can't mount a small file system here: {mount.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder) -> None:
    """Fill the file system holding ``folder`` to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\1" * 4096)


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def noise(size: int = 40) -> Volume:
    """Incompressible voxels: a file of them can't squeeze into a 64 KiB disk."""
    tensor = torch.from_numpy(np.random.default_rng(0).random((1, size, size, size),
                                                              dtype=np.float32))
    return Volume(tensor, np.diag([0.8, 0.9, 1.5, 1.0]), "noise")


# --- --overwrite replaces only what we wrote ----------------------------------------------


def test_overwrite_never_replaces_the_training_data(tiny_config, scans):
    before = snapshot(scans)
    config = tiny_config()
    config.data.paths = [str(scans)]
    with pytest.raises(OutputError, match="scans is one of the inputs"):
        api.train(config, scans, overwrite=True)
    with pytest.raises(OutputError, match="holds the input"):
        api.train(config, scans.parent, overwrite=True)  # a parent of the data
    assert snapshot(scans) == before


def test_the_working_folder_is_never_a_checkpoint(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    for out in (".", tmp_path, tmp_path.parent):
        with pytest.raises(OutputError, match="working folder"):
            api.train(tiny_config(), out, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_folder_or_file_that_is_not_a_checkpoint(tiny_config, tmp_path):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "table.csv").write_text("1,2")
    with pytest.raises(OutputError, match="not a medgan checkpoint"):
        api.train(tiny_config(), mine, overwrite=True)
    file = tmp_path / "ckpt"
    file.write_text("a file")
    with pytest.raises(OutputError, match="is a file"):
        api.train(tiny_config(), file, overwrite=True)
    assert (mine / "table.csv").read_text() == "1,2" and file.read_text() == "a file"


def test_an_empty_folder_takes_a_checkpoint_without_overwrite(tiny_config, tmp_path):
    out = tmp_path / "made-in-a-folder-dialog"
    out.mkdir()
    events = list(api.train(tiny_config(steps=2), out))
    assert events[-1].kind == "done" and api.read_card(out)["step"] == 2


def test_overwrite_replaces_a_checkpoint_and_nothing_else_is_left(tiny_config, tmp_path):
    out = tmp_path / "ckpt"
    list(api.train(tiny_config(steps=2), out))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        api.train(tiny_config(steps=2), out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt, which is not part of a checkpoint"):
        api.train(tiny_config(steps=2), out, overwrite=True)
    (out / "notes.txt").unlink()
    events = list(api.train(tiny_config(steps=3), out, overwrite=True))
    assert events[-1].kind == "done" and api.read_card(out)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no *.previous, no *.tmp-*


def test_a_volume_is_never_written_over_an_input_or_into_a_series_folder(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    (series / "a.dcm").write_bytes(b"x")
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"mine")
    with pytest.raises(OutputError, match="one of the inputs"):
        api.check_output(scan, kind="volume", overwrite=True, inputs=[scan])
    with pytest.raises(OutputError, match="inside the input folder"):
        api.check_output(series / "out.nii.gz", kind="volume", inputs=[series])
    # nor into a series folder that is no input of this run: the series would not open again
    for out, kind in ((series / "out.nii.gz", "volume"), (series, "folder")):
        with pytest.raises(OutputError, match="holds a DICOM series"):
            api.check_output(out, kind=kind, overwrite=True)
    assert sorted(p.name for p in series.iterdir()) == ["a.dcm"]
    # new files beside an input are fine: `medgan synthesize ckpt --out .`
    assert api.check_output(tmp_path, kind="folder", inputs=[series]) == tmp_path
    with pytest.raises(DataError, match="unsupported file type '.png'"):
        api.check_output(tmp_path / "res.png", kind="volume")


def test_write_sample_names_the_flag_and_checks_before_loading(tmp_path, monkeypatch):
    target = tmp_path / "t1.nii.gz"
    target.write_bytes(b"mine")
    monkeypatch.setattr("napari_medgan.core.data.samples.sample_volume", None)  # never reached
    with pytest.raises(OutputExistsError, match="add --overwrite"):
        api.write_sample("mni152_t1", target)
    assert target.read_bytes() == b"mine"


def test_a_saved_config_never_replaces_a_file_unasked(tmp_path):
    target = tmp_path / "settings.yaml"
    target.write_text("mine")
    with pytest.raises(OutputExistsError, match="settings.yaml already exists"):
        api.save_config(api.Config(), target)
    assert target.read_text() == "mine"
    api.save_config(api.Config(), target, overwrite=True)
    assert api.load_config(target) == api.Config()


# --- verified writes ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".tif"])
def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, suffix):
    with small_fs(tmp_path / "disk") as disk:
        target = disk / f"out{suffix}"
        small = noise(4)
        write_volume(small, target)
        with pytest.raises(OutputError, match=f"Could not write {target}.*previous file is intact"):
            write_volume(noise(40), target, overwrite=True)
        assert torch.equal(read_volume(target).tensor, small.tensor)
        assert sorted(p.name for p in disk.iterdir()) == [target.name]  # no temporary left


def test_a_writer_that_wraps_values_without_raising_is_caught(tmp_path, monkeypatch):
    """A writer that casts to a narrower type (70000 → 4464) must not reach the user."""
    target = tmp_path / "labels.tif"
    target.write_bytes(b"previous")
    monkeypatch.setattr(io, "_tiff_array", lambda array, path: array.astype(np.uint16))
    labels = torch.full((1, 8, 8, 8), 70_000, dtype=torch.int32)
    with pytest.raises(OutputError, match=r"values exactly.*the previous file is intact"):
        write_volume(Volume(labels, np.eye(4)), target, overwrite=True)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_a_writer_that_writes_short_without_raising_is_caught(tmp_path, monkeypatch):
    """SimpleITK does not raise on a short write: the read-back must catch it."""
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous")
    real_write = io._write

    def short_write(volume, temporary, path):
        real_write(volume, temporary, path)
        temporary.write_bytes(temporary.read_bytes()[:300])

    monkeypatch.setattr(io, "_write", short_write)
    with pytest.raises(OutputError, match=r"read back whole\); the previous file is intact"):
        write_volume(noise(8), target, overwrite=True)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_a_file_in_the_way_of_the_folder_is_one_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt is a file"):
        write_volume(noise(4), tmp_path / "notes.txt" / "out.nii.gz")


def test_a_sheared_affine_round_trips_exactly(tmp_path):
    affine = np.array([[0.75, 0.25, 0.0, -90.5],
                       [0.0, 0.875, 0.125, 12.25],
                       [0.0625, 0.0, 2.5, 40.75],
                       [0.0, 0.0, 0.0, 1.0]])
    volume = Volume(noise(6).tensor, affine, "sheared")
    for suffix in (".nii.gz", ".nrrd"):
        back = read_volume(write_volume(volume, tmp_path / f"sheared{suffix}"))
        np.testing.assert_allclose(back.affine, affine, rtol=0, atol=1e-6)
        assert torch.equal(back.tensor, volume.tensor)


# --- probe before work --------------------------------------------------------------------


def test_a_read_only_or_full_place_is_refused_before_training(tiny_config, tmp_path):
    with small_fs(tmp_path / "ro", "1m", "ro") as read_only:
        with pytest.raises(OutputError, match="Can't write in .*ro .*Read-only"):
            api.train(tiny_config(), read_only / "ckpt")
    with small_fs(tmp_path / "full", "64k") as full:
        events = api.train(tiny_config(), full / "ckpt")
        with pytest.raises(OutputError, match="free but .*ckpt needs about"):
            next(events)  # refused when the nets are known, before the first step
        assert list(full.iterdir()) == []


def test_a_failed_save_keeps_the_last_good_checkpoint_and_names_it(tiny_config, tmp_path):
    with small_fs(tmp_path / "disk", "5m") as disk:
        out = disk / "ckpt"
        events = api.train(tiny_config(steps=6, checkpoint_every=2), out)
        with pytest.raises(OutputError) as caught:
            for event in events:
                if event.checkpoint:
                    fill(disk)
        message = str(caught.value)
        assert f"Could not save checkpoint {out}" in message
        assert f"the last good checkpoint is {out} (step 2)" in message
        (disk / "filler").unlink()
        assert api.read_card(out)["step"] == 2
        assert api.load_model(out).task_name == "synthesis"
        assert sorted(p.name for p in disk.iterdir()) == ["ckpt"]

