import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from napari_medgan.core import checkpoint as ckpt
from napari_medgan.core.errors import CheckpointError

CARD = {"format_version": 1, "task": "synthesis", "config": {}, "step": 3}


def _save(path, value=1.0, step=3):
    return ckpt.save_checkpoint(
        path,
        card=dict(CARD, step=step),
        weights={"G.w": torch.full((4, 4), value)},
        training_state={"rng.task": torch.arange(3, dtype=torch.uint8)},
        training_meta={"note": "hello"},
    )


def test_round_trip_keeps_tensors_card_and_meta(tmp_path):
    _save(tmp_path / "run", 2.5)
    loaded = ckpt.load_checkpoint(tmp_path / "run", with_training_state=True)
    assert loaded.card["step"] == 3
    assert torch.equal(loaded.weights["G.w"], torch.full((4, 4), 2.5))
    assert torch.equal(loaded.training_state["rng.task"], torch.arange(3, dtype=torch.uint8))
    assert loaded.training_meta == {"note": "hello"}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ckpt.CARD_FILE,
        ckpt.WEIGHTS_FILE,
        ckpt.STATE_FILE,
    ]


def test_saving_again_replaces_and_leaves_no_temporary_folders(tmp_path):
    _save(tmp_path / "run", 1.0)
    _save(tmp_path / "run", 7.0, step=9)
    assert ckpt.read_card(tmp_path / "run")["step"] == 9
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(tmp_path):
    _save(tmp_path / "run", 1.0)
    with pytest.raises(TypeError):  # an object JSON can't hold: fails after the weights are written
        ckpt.save_checkpoint(
            tmp_path / "run", card=dict(CARD, bad=object()), weights={"G.w": torch.zeros(4, 4)}
        )
    loaded = ckpt.load_checkpoint(tmp_path / "run")
    assert torch.equal(loaded.weights["G.w"], torch.ones(4, 4))
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_kill_between_the_two_renames_is_recovered(tmp_path):
    _save(tmp_path / "run", 4.0)
    os.rename(tmp_path / "run", tmp_path / ".run.previous")  # the state mid-swap
    assert torch.equal(
        ckpt.load_checkpoint(tmp_path / "run").weights["G.w"], torch.full((4, 4), 4.0)
    )


KILLER = """
import sys, torch
from napari_medgan.core.checkpoint import save_checkpoint
step = 0
while True:
    step += 1
    save_checkpoint(sys.argv[1], card={"format_version": 1, "task": "synthesis", "config": {},
                    "step": step}, weights={"G.w": torch.full((256, 1024), float(step))})
    print(step, flush=True)
"""


def test_killing_a_process_while_it_saves_leaves_a_loadable_consistent_checkpoint(tmp_path):
    target = tmp_path / "run"
    for delay in (0.3, 0.45, 0.6, 0.75):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(target)], stdout=subprocess.PIPE)
        assert proc.stdout.readline()  # at least one save completed
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded = ckpt.load_checkpoint(target)
        assert torch.all(loaded.weights["G.w"] == loaded.card["step"])  # weights match the card


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pickle_files_are_refused_without_loading_them(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="never loads pickles"):
        ckpt.load_checkpoint(path)


def test_a_raw_pickle_with_an_innocent_name_is_refused(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\x80\x05N.")  # pickle protocol 5 of None
    with pytest.raises(CheckpointError, match="pickle"):
        ckpt.load_checkpoint(path)


def test_missing_folder_and_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nowhere")
    _save(tmp_path / "run")
    (tmp_path / "run" / ckpt.WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        ckpt.load_checkpoint(tmp_path / "run")
    (tmp_path / "run" / ckpt.CARD_FILE).unlink()
    with pytest.raises(CheckpointError, match="no card.json"):
        ckpt.load_checkpoint(tmp_path / "run")


def test_bad_json_and_incomplete_cards_are_refused(tmp_path):
    _save(tmp_path / "run")
    card = tmp_path / "run" / ckpt.CARD_FILE
    card.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ckpt.load_checkpoint(tmp_path / "run")
    card.write_text(json.dumps({"task": "synthesis"}))
    with pytest.raises(CheckpointError, match="format_version"):
        ckpt.load_checkpoint(tmp_path / "run")
    card.write_text(json.dumps(dict(CARD, format_version=99)))
    with pytest.raises(CheckpointError, match="newer napari-medgan"):
        ckpt.load_checkpoint(tmp_path / "run")


def test_corrupt_weights_file_is_reported(tmp_path):
    _save(tmp_path / "run")
    (tmp_path / "run" / ckpt.WEIGHTS_FILE).write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="damaged"):
        ckpt.load_checkpoint(tmp_path / "run")


def test_strict_loading_names_the_tensor_whose_shape_differs(tmp_path):
    net = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"G\.weight has shape \(2, 5\)"):
        ckpt.load_state_strict(
            net, {"G.weight": torch.zeros(2, 5), "G.bias": torch.zeros(2)}, "G", tmp_path
        )
    with pytest.raises(CheckpointError, match="missing"):
        ckpt.load_state_strict(net, {"G.weight": torch.zeros(2, 3)}, "G", tmp_path)


def test_optimizer_state_round_trips_exactly():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.9))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    tensors, meta = ckpt.optimizer_to_tensors(opt, "optim.G")
    json.dumps(meta)  # the non-tensor part must be JSON
    twin = torch.nn.Linear(4, 1)
    twin.load_state_dict(net.state_dict())
    twin_opt = torch.optim.Adam(twin.parameters(), lr=1.0)
    ckpt.optimizer_from_tensors(twin_opt, tensors, json.loads(json.dumps(meta)), "optim.G")
    batch = torch.randn(8, 4)
    for model, optimizer in ((net, opt), (twin, twin_opt)):
        optimizer.zero_grad()
        model(batch).pow(2).mean().backward()
        optimizer.step()
    assert torch.equal(net.weight, twin.weight)
