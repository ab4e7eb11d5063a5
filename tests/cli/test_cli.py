"""`medgan` as a user types it: exit codes, one-line errors, outputs never silently replaced."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_medgan.cli import EXIT_STOPPED, main

MEDGAN = str(Path(sys.executable).with_name("medgan"))
TINY = ["--patch", "16", "--batch", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(real_dir, tiny_yaml, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ckpt"
    code = main(["train", "--task", "synthesis", "--data", str(real_dir / "t1_a.nii.gz"),
                 "--steps", "3", "--config", str(tiny_yaml), "--out", str(out), *TINY])
    assert code == 0
    return out


def test_events_jsonl_prints_only_json_objects_on_stdout(real_dir, tiny_yaml, tmp_path):
    out = tmp_path / "ckpt"
    result = subprocess.run(
        [MEDGAN, "train", "--data", str(real_dir / "t1_a.nii.gz"), "--steps", "4", "--config",
         str(tiny_yaml), "--out", str(out), "--events", "jsonl", *TINY],
        capture_output=True, text=True, check=True)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["start", "step", "step", "step", "step", "done"]
    assert events[-1]["checkpoint"] == str(out)
    previews = [e["preview"] for e in events if e["event"] == "step" and e["preview"]]
    assert previews and Path(previews[0]).is_file()


def test_a_terminal_gets_a_progress_bar_on_stderr(real_dir, tiny_yaml, tmp_path, capsys):
    assert main(["train", "--data", str(real_dir / "t1_a.nii.gz"), "--steps", "2", "--config",
                 str(tiny_yaml), "--out", str(tmp_path / "c"), *TINY]) == 0
    captured = capsys.readouterr()
    assert "2/2" in captured.err and "step" in captured.err
    assert captured.out == ""


def test_a_user_error_is_one_line_with_exit_code_2(tmp_path):
    result = subprocess.run([MEDGAN, "train", "--data", str(tmp_path / "missing.nii.gz"),
                             "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "missing.nii.gz" in result.stderr
    assert "Traceback" not in result.stderr
    debug = subprocess.run([MEDGAN, "--debug", "train", "--data", str(tmp_path / "missing.nii.gz"),
                            "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_training_never_replaces_an_existing_output_unasked(real_dir, tiny_yaml, checkpoint,
                                                            capsys):
    before = (checkpoint / "card.json").read_text()
    args = ["train", "--data", str(real_dir / "t1_a.nii.gz"), "--steps", "2", "--config",
            str(tiny_yaml), "--out", str(checkpoint), *TINY]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (checkpoint / "card.json").read_text() == before


def test_synthesize_writes_each_format_and_refuses_to_overwrite(checkpoint, tmp_path, capsys):
    for fmt in ("nii.gz", "nrrd", "tif"):
        assert main(["synthesize", str(checkpoint), "--n", "2", "--out", str(tmp_path / fmt),
                     "--format", fmt]) == 0
        assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == [
            f"synth_000.{fmt}", f"synth_001.{fmt}"]
    stamp = (tmp_path / "nrrd" / "synth_000.nrrd").stat().st_mtime_ns
    assert main(["synthesize", str(checkpoint), "--n", "2", "--out", str(tmp_path / "nrrd"),
                 "--format", "nrrd"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "nrrd" / "synth_000.nrrd").stat().st_mtime_ns == stamp
    assert main(["synthesize", str(checkpoint), "--n", "2", "--out", str(tmp_path / "nrrd"),
                 "--format", "nrrd", "--overwrite"]) == 0


def test_info_and_evaluate(checkpoint, real_dir, capsys):
    assert main(["info", str(checkpoint)]) == 0
    text = capsys.readouterr().out
    assert "synthesis" in text and "3 of 3" in text
    assert main(["info", str(checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3
    assert main(["evaluate", str(checkpoint), "--data", str(real_dir / "t1_b.nii.gz"),
                 "--n", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_synthetic"] == 8 and "mmd_synthetic_vs_held_out" in report
    assert main(["evaluate", str(checkpoint), "--data", str(real_dir / "t1_b.nii.gz"),
                 "--n", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()  # realism first, then how to read it
    assert lines[0].split()[0] == "c2st_auc_vs_training"
    assert float(lines[0].split()[1]) == pytest.approx(report["c2st_auc_vs_training"], abs=1e-4)
    assert "0.5 = indistinguishable" in "\n".join(lines[:8])
    for n in ("0", "1", "3"):  # too few patches: the flag is named
        assert main(["evaluate", str(checkpoint), "--data", str(real_dir / "t1_b.nii.gz"),
                     "--n", n]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"n={n}; use --n 4" in err, err


def test_apply_refused_after_loading_is_still_one_line(checkpoint, real_dir, tmp_path, capsys):
    """A synthesis model can't be applied: found after loading, before any patch, so no
    empty progress bar comes with the error."""
    out = tmp_path / "res.nii.gz"
    assert main(["apply", str(checkpoint), str(real_dir / "t1_b.nii.gz"), "--out", str(out),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "medgan synthesize" in err and "patch" not in err, err
    assert not out.exists()


def test_sample_data_writes_a_named_volume(tmp_path, capsys):
    assert main(["sample-data", "mni152_gm", "--out", str(tmp_path / "gm.nii.gz")]) == 0
    assert (tmp_path / "gm.nii.gz").stat().st_size > 10_000
    assert main(["sample-data", "nothing", "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "mni152_t1" in capsys.readouterr().err


def test_a_pickle_given_as_checkpoint_is_refused(tmp_path, capsys):
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pth")
    assert main(["synthesize", str(tmp_path / "model.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "pickle" in capsys.readouterr().err


def test_cuda_where_there_is_none_is_a_user_error(real_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["train", "--data", str(real_dir / "t1_a.nii.gz"), "--out", str(tmp_path / "c"),
                 "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_ctrl_c_stops_with_a_checkpoint_and_resume_finishes(real_dir, tiny_yaml, tmp_path):
    out = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [MEDGAN, "train", "--data", str(real_dir / "t1_a.nii.gz"), "--steps", "100000",
         "--config", str(tiny_yaml), "--out", str(out), "--events", "jsonl", *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if json.loads(line)["step"] >= 3:
            proc.send_signal(signal.SIGINT)
            break
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == EXIT_STOPPED
    stopped = rest[-1]
    assert stopped["event"] == "stopped" and stopped["checkpoint"] == str(out)
    step = stopped["step"]
    assert main(["train", "--resume", str(out), "--steps", str(step + 2), "--out", str(out)]) == 0
    assert json.loads((out / "card.json").read_text())["step"] == step + 2



def test_the_command_line_calls_the_core_only_through_its_api():
    import ast

    import napari_medgan.cli as cli

    tree = ast.parse(Path(cli.__file__).read_text())
    core = {(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and "core" in (node.module or "")
            for alias in node.names}
    assert {module for module, _ in core} == {"core", "core.errors"}
    assert {name for module, name in core if module == "core"} == {"api"}
