"""Damaged or hand-edited checkpoint cards: one error naming the field and the file, never a
traceback, and nets whose sizes disagree with the weights are refused before they are built."""

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from napari_medgan.cli import main
from napari_medgan.core import api
from napari_medgan.core.checkpoint import CARD_FILE, read_card
from napari_medgan.core.errors import CheckpointError

MEDGAN = str(Path(sys.executable).with_name("medgan"))


@pytest.fixture(scope="module")
def models(real_dir, conditional_config, tmp_path_factory):
    """A tiny synthesis model and a tiny translation model (T1 → grey matter)."""
    out = tmp_path_factory.mktemp("cards")
    synthesis = api.Config.from_dict({
        "data": {"paths": [str(real_dir / "t1_a.nii.gz")]},
        "model": {"patch_size": 16, "latent_dim": 8, "g_channels": 4, "d_channels": 4,
                  "max_channels": 16},
        "train": {"steps": 1, "batch_size": 2, "device": "cpu"},
    })
    list(api.train(synthesis, out / "synthesis"))
    translation = conditional_config("translation", 1, targets=["gm_a.nii.gz"],
                                     target_modality="mr")
    list(api.train(translation, out / "translation"))
    return out


def _set(path: str, value):
    """An edit that sets the card field ``path`` (dotted) to ``value``."""

    def edit(card):
        *parents, last = path.split(".")
        for key in parents:
            card = card[key]
        card[last] = value

    return edit


def _deep_array(card):
    card["data"] = "DEEP"


# (edit of the card, what the message must name)
CASES = {
    "format_version text": (_set("format_version", "1"), "format_version"),
    "format_version list": (_set("format_version", [1]), "format_version"),
    "format_version 0": (_set("format_version", 0), "format_version"),
    "config text": (_set("config", "synthesis"), "config"),
    "config.train text": (_set("config.train", "fast"), "train"),
    "config.model.latent_dim 32 TB": (_set("config.model.latent_dim", 2**42), "latent_dim"),
    "data text": (_set("data", "t1.nii.gz"), "data"),
    "data.files text": (_set("data.files", "t1.nii.gz"), "data.files"),
    "nets list": (_set("nets", ["G", "D"]), "nets"),
    "parameters text": (_set("nets.G.parameters", "1,234"), "nets.G.parameters"),
    "spacing text": (_set("spacing", ["1", "1", "1"]), "spacing"),
    "spacing negative": (_set("spacing", [1.0, -1.0, 1.0]), "spacing"),
    "direction 2x2": (_set("direction", [[1, 0], [0, 1]]), "direction"),
    "direction singular": (_set("direction", [[1, 0, 0], [1, 0, 0], [0, 0, 1]]), "direction"),
    "step text": (_set("step", "3"), "step"),
    "patch_size disagrees": (_set("patch_size", 32), "patch_size"),
    "normalisation modality": (_set("normalizations.image.modality", "pet"), "modality"),
    "normalisation low above high": (_set("normalizations.image.low", 1e9), "low"),
    "loss history": (_set("loss_history", {"loss_g": ["nan?"]}), "loss_history.loss_g"),
    "label_values text": (_set("label_values", ["1"]), "label_values"),
    "label_values not one per class": (_set("label_values", [0, 1]), "label_values"),
    "label_values repeated": (lambda card: card.update(num_classes=3, label_values=[0, 0, 255]),
                              "label_values"),
    "nested 10^5 deep": (_deep_array, "nested too deeply"),
}


def _broken_copy(source: Path, tmp_path: Path, edit) -> Path:
    """A copy of a real checkpoint whose card was edited by ``edit``."""
    target = tmp_path / f"broken_{source.name}"
    shutil.copytree(source, target)
    card = json.loads((target / CARD_FILE).read_text())
    edit(card)
    text = json.dumps(card).replace('"DEEP"', "[" * 100_000 + "]" * 100_000)
    (target / CARD_FILE).write_text(text)
    return target


@pytest.mark.parametrize("case", CASES)
def test_a_broken_card_is_refused_naming_the_field_and_the_file(models, tmp_path, case):
    edit, field = CASES[case]
    broken = _broken_copy(models / "synthesis", tmp_path, edit)
    for load in (read_card, api.load_model):
        with pytest.raises(CheckpointError, match=field) as caught:
            load(broken)
        assert str(broken / CARD_FILE) in str(caught.value)


@pytest.mark.parametrize("case", CASES)
def test_each_command_exits_2_with_one_line(models, real_dir, tmp_path, capsys, case):
    edit, field = CASES[case]
    synthesis = _broken_copy(models / "synthesis", tmp_path, edit)
    translation = _broken_copy(models / "translation", tmp_path, edit)
    commands = (
        ["info", str(synthesis)],
        ["synthesize", str(synthesis), "--out", str(tmp_path / "synth")],
        ["apply", str(translation), str(real_dir / "t1_b.nii.gz"), "--out",
         str(tmp_path / "gm.nii.gz")],
    )
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and field in err and "card.json" in err, (command, err)
    assert not (tmp_path / "synth").exists() and not (tmp_path / "gm.nii.gz").exists()


def test_a_card_whose_model_fields_are_gone_says_which(models, tmp_path):
    def strip(card):
        del card["normalizations"]["target"], card["spacing"]

    broken = _broken_copy(models / "translation", tmp_path, strip)
    assert read_card(broken)["task"] == "translation"  # still listable by a face
    with pytest.raises(CheckpointError, match=r"lacks spacing, normalizations\.target"):
        api.load_model(broken)


def _address_space_2gb() -> None:
    limit = 2 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_nets_far_larger_than_the_weights_are_refused_before_memory_is_taken(models, tmp_path):
    """4096 channels ask for several GB per layer; the weights are checked first, on nets
    built on the meta device, so the command fails cleanly within a 2 GB address space."""
    widths = {"g_channels": 4096, "d_channels": 4096, "max_channels": 4096}
    broken = _broken_copy(models / "synthesis", tmp_path,
                          lambda card: card["config"]["model"].update(widths))
    assert read_card(broken)["config"]["model"]["g_channels"] == 4096  # a valid card
    result = subprocess.run([MEDGAN, "synthesize", str(broken), "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, preexec_fn=_address_space_2gb)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "has shape" in result.stderr


def test_a_sound_card_reads_with_its_config_complete(models):
    card = read_card(models / "synthesis")
    assert card["config"]["train"]["steps"] == 1 and card["config"]["model"]["patch_size"] == 16
    assert len(card["direction"]) == 3 and all(s > 0 for s in card["spacing"])
    assert api.load_model(models / "synthesis").patch_size == 16
