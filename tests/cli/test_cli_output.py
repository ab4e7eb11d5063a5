"""`medgan` outputs and stopping, as real processes: nothing the user had is replaced, an
output that can't be written is refused up front, and each way of stopping has its exit code."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from napari_medgan.cli import EXIT_ABORTED, EXIT_STOPPED, EXIT_USER_ERROR
from napari_medgan.core import api

MEDGAN = str(Path(sys.executable).with_name("medgan"))
TINY = ["--patch", "16", "--batch", "2", "--device", "cpu"]


def medgan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MEDGAN, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_overwrite_never_deletes_the_data_the_working_folder_or_their_parent(scans, tiny_yaml):
    before = snapshot(scans.parent)
    for out, cwd, words in ((scans, None, ("scans is one of the inputs",)),
                            (".", scans.parent, ("working folder",)),
                            (scans.parent, None, ("holds the input",))):
        result = medgan("train", "--data", scans, "--out", out, "--overwrite", "--steps", "2",
                        "--config", tiny_yaml, *TINY, cwd=cwd)
        one_line_error(result, *words)
    assert snapshot(scans.parent) == before


def test_overwriting_a_real_checkpoint_works_and_leaves_nothing_beside_it(scans, tiny_yaml):
    out = scans.parent / "ckpt"
    common = ["train", "--data", scans, "--config", tiny_yaml, "--out", out, *TINY]
    assert medgan(*common, "--steps", "2").returncode == 0
    one_line_error(medgan(*common, "--steps", "2"), "already exists", "--overwrite")
    result = medgan(*common, "--steps", "3", "--overwrite", "--events", "jsonl")
    assert result.returncode == 0, result.stderr
    assert api.read_card(out)["step"] == 3
    assert sorted(p.name for p in scans.parent.iterdir()) == ["ckpt", "ckpt-preview.nii.gz",
                                                              "scans"]
    assert json.loads(result.stdout.splitlines()[0])["preview"] is False  # as the README says


def test_an_empty_folder_takes_a_checkpoint_and_another_folder_is_never_offered_overwrite(
        scans, tiny_yaml):
    """`mkdir runs/ct` first is fine; a folder of the user's is refused without suggesting
    --overwrite, which would be refused too."""
    empty, mine = scans.parent / "empty", scans.parent / "mine"
    empty.mkdir()
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    common = ["train", "--data", scans, "--config", tiny_yaml, "--steps", "2", *TINY]
    result = medgan(*common, "--out", empty)
    assert result.returncode == 0, result.stderr
    assert api.read_card(empty)["step"] == 2
    for extra in ((), ("--overwrite",)):
        result = medgan(*common, "--out", mine, *extra)
        one_line_error(result, "mine is not a medgan checkpoint")
        assert "add --overwrite" not in result.stderr
    assert snapshot(mine) == {"notes.txt": b"mine"}


def test_apply_refuses_its_input_as_output_and_a_bad_suffix_before_loading(real_dir, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    shutil.copy(real_dir / "t1_a.nii.gz", scan)
    before = scan.read_bytes()
    missing = tmp_path / "no_such_checkpoint"  # never opened: the output is checked first
    one_line_error(medgan("apply", missing, scan, "--out", scan, "--overwrite"),
                   "one of the inputs")
    assert scan.read_bytes() == before
    one_line_error(medgan("apply", missing, scan, "--out", tmp_path / "res.png"),
                   "res.png", "unsupported file type")
    one_line_error(medgan("synthesize", tmp_path, "--out", tmp_path / "o"), "no card.json")


def test_a_read_only_place_is_refused_before_training(real_dir, tmp_path, tiny_yaml):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(read_only)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"can't mount a read-only file system here: {mount.stderr.strip()}")
    try:
        started = time.perf_counter()
        result = medgan("train", "--data", real_dir / "t1_a.nii.gz", "--out", read_only / "ckpt",
                        "--steps", "100000", "--config", tiny_yaml, *TINY)
        one_line_error(result, "Can't write in", "Read-only")
        assert time.perf_counter() - started < 60
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=True)


def test_sample_data_names_the_overwrite_flag(tmp_path):
    target = tmp_path / "gm.nii.gz"
    target.write_bytes(b"mine")
    one_line_error(medgan("sample-data", "mni152_gm", "--out", target), "add --overwrite")
    assert target.read_bytes() == b"mine"


# --- stopping -----------------------------------------------------------------------------


class Stderr:
    """Collect a process's stderr in a thread, so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen):
        self.text = ""
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc):
        for chunk in iter(lambda: proc.stderr.read(1), ""):
            self.text += chunk

    def wait_for(self, word: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while word not in self.text:
            assert time.monotonic() < deadline, f"no {word!r} in stderr: {self.text}"
            time.sleep(0.02)


def start_training(real_dir, out, config, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [MEDGAN, "train", "--data", str(real_dir / "t1_a.nii.gz"), "--steps", "100000",
         "--config", str(config), "--out", str(out), "--events", "jsonl", "--device", "cpu",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_writes_the_checkpoint_and_exits_stopped(real_dir, tiny_yaml, tmp_path):
    out = tmp_path / "ckpt"
    proc = start_training(real_dir, out, tiny_yaml, "--patch", "16", "--batch", "2")
    for line in proc.stdout:
        if json.loads(line)["event"] == "step":
            proc.send_signal(signal.SIGTERM)
            break
    last = [json.loads(line) for line in proc.stdout][-1]
    assert proc.wait(timeout=120) == EXIT_STOPPED
    assert last["event"] == "stopped" and last["checkpoint"] == str(out)
    assert api.load_model(out).card["step"] == last["step"] >= 1


def assert_aborted_with_one_line(proc: subprocess.Popen, stderr: Stderr) -> None:
    """Exit code 130 and a last line saying so, never a traceback."""
    assert proc.wait(timeout=120) == EXIT_ABORTED
    stderr.thread.join(timeout=10)
    assert "Traceback" not in stderr.text
    assert stderr.text.strip().splitlines()[-1].startswith("medgan: aborted")


def test_a_second_ctrl_c_aborts_with_one_line(real_dir, tmp_path):
    slow = tmp_path / "slow.yaml"  # steps long enough for the second Ctrl-C to land mid-step
    slow.write_text("model: {g_channels: 48, d_channels: 48, max_channels: 192}\n")
    proc = start_training(real_dir, tmp_path / "ckpt", slow, "--patch", "32", "--batch", "8")
    stderr = Stderr(proc)
    for line in proc.stdout:
        if json.loads(line)["event"] == "step":
            proc.send_signal(signal.SIGINT)
            break
    stderr.wait_for("again to abort")
    proc.send_signal(signal.SIGINT)
    assert_aborted_with_one_line(proc, stderr)
    assert len(stderr.text.strip().splitlines()) <= 3


def test_ctrl_c_during_apply_exits_with_one_line_and_writes_nothing(real_dir, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: {unet_channels: [8, 16], patchgan_channels: 8}\n")
    model = tmp_path / "ckpt"
    assert medgan("train", "--task", "translation", "--data", real_dir / "t1_a.nii.gz",
                  "--target", real_dir / "gm_a.nii.gz", "--target-modality", "mr", "--steps", "1",
                  "--config", config, "--out", model, *TINY).returncode == 0
    out = tmp_path / "gm.nii.gz"
    proc = subprocess.Popen([MEDGAN, "apply", str(model), str(real_dir / "t1_a.nii.gz"),
                             "--out", str(out), "--overlap", "0.95", "--batch", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = Stderr(proc)
    stderr.wait_for("patch/s")
    proc.send_signal(signal.SIGINT)
    assert_aborted_with_one_line(proc, stderr)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt",
                                                                                "tiny.yaml"]
