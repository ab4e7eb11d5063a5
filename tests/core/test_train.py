"""The training loop driven the way a face drives it: iterate events, request a stop, resume."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.checkpoint import load_checkpoint, read_card
from napari_medgan.core.errors import ConfigError, DeviceError, TrainingError


def run(config, out, **kwargs):
    return list(api.train(config, out, **kwargs))


def test_events_report_progress_previews_and_checkpoints(tiny_config, tmp_path):
    config = tiny_config(steps=5, preview_every=2, checkpoint_every=2)
    events = run(config, tmp_path / "ckpt")
    assert [e.kind for e in events] == ["start"] + ["step"] * 5 + ["done"]
    steps = events[1:-1]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5] and {e.total for e in events} == {5}
    assert all(set(e.losses) == {"loss_d", "loss_g"} for e in steps)
    assert all(e.steps_per_s > 0 for e in steps) and steps[-1].eta_s == 0
    assert [e.step for e in steps if e.preview is not None] == [2, 4, 5]
    assert [e.step for e in steps if e.checkpoint] == [2, 4]
    preview = steps[1].preview
    assert preview.tensor.shape == (1, 16, 16, 16)
    np.testing.assert_allclose(preview.spacing, (1.0, 1.0, 1.0))
    card = read_card(events[-1].checkpoint)
    assert card["step"] == 5 and card["task"] == "synthesis"
    assert len(card["loss_history"]["loss_d"]) == 5
    assert card["data"]["files"] and card["config"]["train"]["steps"] == 5
    assert card["normalizations"]["image"]["modality"] == "mr" == card["modality"]
    assert set(card["nets"]) == {"G", "G_ema", "D", "D_local"}  # synthesis's local critic


def test_a_stop_request_ends_at_the_next_step_with_a_checkpoint(tiny_config, tmp_path):
    stop = threading.Event()
    events = []
    for event in api.train(tiny_config(steps=50), tmp_path / "ckpt", stop=stop):
        events.append(event)
        if event.step == 3:
            stop.set()
    assert events[-1].kind == "stopped" and events[-1].step == 3
    assert read_card(tmp_path / "ckpt")["step"] == 3


def test_the_same_seed_repeats_the_run_and_another_seed_does_not(tiny_config, tmp_path):
    losses = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        events = run(tiny_config(seed=seed), tmp_path / name)
        losses.append([e.losses["loss_d"] for e in events if e.kind == "step"])
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


# the data-efficient switches (#10) draw from the task's generator: resume must stay exact
SWITCHES = {"diff_augment": ["intensity", "flip", "translation", "cutout"], "r1_weight": 1.0,
            "r1_every": 2}


@pytest.mark.parametrize(("sampler", "switches"),
                         [("device", {}), ("queue", {}), ("device", SWITCHES)])
def test_a_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(
    tiny_config, tmp_path, sampler, switches
):
    def config(steps):
        c = tiny_config(steps=steps, checkpoint_every=100, **switches)
        c.data.sampler = sampler
        return c

    whole = [e.losses for e in run(config(6), tmp_path / "whole") if e.kind == "step"]
    run(config(3), tmp_path / "part")
    resumed_events = run(config(6), tmp_path / "part", resume=tmp_path / "part")
    resumed = [e.losses for e in resumed_events if e.kind == "step"]
    assert [e.step for e in resumed_events if e.kind == "step"] == [4, 5, 6]
    if sampler == "device":  # the queue's buffer isn't saved: only the device sampler is exact
        assert resumed == whole[3:]
        a = load_checkpoint(tmp_path / "whole").weights
        b = load_checkpoint(tmp_path / "part").weights
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(read_card(tmp_path / "part")["loss_history"]["loss_g"]) == 6


def test_resume_refuses_other_nets_and_finished_runs(tiny_config, tmp_path):
    run(tiny_config(steps=2), tmp_path / "ckpt")
    bigger = tiny_config(steps=4)
    bigger.model.g_channels = 8
    with pytest.raises(ConfigError, match="differ"):
        run(bigger, tmp_path / "ckpt", resume=tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="already trained 2 steps"):
        run(tiny_config(steps=2), tmp_path / "ckpt", resume=tmp_path / "ckpt")


@pytest.mark.parametrize(
    ("loss", "options"),
    [("hinge", {"spectral_norm": True}), ("lsgan", {"upsample": "resize"}), ("wgan-gp", {})],
)
def test_every_loss_trains_with_finite_losses(tiny_config, tmp_path, loss, options):
    config = tiny_config(steps=2, loss=loss)
    for key, value in options.items():
        setattr(config.model, key, value)
    events = run(config, tmp_path / "ckpt")
    steps = [e for e in events if e.kind == "step"]
    assert all(np.isfinite(v) for e in steps for v in e.losses.values())
    assert api.load_model(tmp_path / "ckpt").card["config"]["train"]["loss"] == loss


def test_channels_last_layout_trains_to_the_same_losses(tiny_config, tmp_path):
    losses = {}
    for layout in ("off", "on"):
        events = run(tiny_config(steps=3, channels_last=layout, amp=False), tmp_path / layout)
        losses[layout] = [list(e.losses.values()) for e in events if e.kind == "step"]
    # the first step's losses come from the same weights: equal up to summation order
    np.testing.assert_allclose(losses["on"][0], losses["off"][0], rtol=1e-5)
    # Adam's first updates, about lr times the gradient's sign, turn rounding differences
    # into weight differences that grow (3e-4 relative by step 3, float32)
    np.testing.assert_allclose(losses["on"], losses["off"], rtol=2e-3)


def test_diverging_training_stops_with_a_clear_error_and_keeps_the_good_checkpoint(
    tiny_config, tmp_path
):
    run(tiny_config(steps=2), tmp_path / "ckpt")
    exploding = tiny_config(steps=40, checkpoint_every=1, lr_d=1e30, lr_g=1e30)
    with pytest.raises(TrainingError, match="NaN or infinite at step 3") as info:
        run(exploding, tmp_path / "ckpt", resume=tmp_path / "ckpt")
    assert f"last good checkpoint is {tmp_path / 'ckpt'} (step 2)" in str(info.value)
    assert read_card(tmp_path / "ckpt")["step"] == 2
    weights = load_checkpoint(tmp_path / "ckpt").weights
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_resume_uses_the_learning_rates_of_the_new_config(tiny_config, tmp_path):
    run(tiny_config(steps=2), tmp_path / "ckpt")
    events = api.train(tiny_config(steps=3, lr_g=1e-5), tmp_path / "ckpt", resume=tmp_path / "ckpt")
    list(events)
    state = load_checkpoint(tmp_path / "ckpt", with_training_state=True).training_meta
    assert state["task"]["G"]["param_groups"][0]["lr"] == 1e-5


def test_out_of_memory_suggests_a_smaller_batch(tiny_config, tmp_path):
    config = tiny_config(batch_size=2**40)  # the memory plan (#11) refuses it before a step
    with pytest.raises(ConfigError, match="--batch"):
        run(config, tmp_path / "ckpt")


def test_cuda_asked_for_where_there_is_none(tiny_config, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        run(tiny_config(device="cuda"), tmp_path / "ckpt")


def test_checkpointed_nets_train_as_the_plain_ones(tiny_config, tmp_path):
    """Same losses step by step (WGAN-GP: the penalty differentiates through checkpointed D)
    and the same weight names in the checkpoint, so either setting loads the other's."""
    runs = []
    for checkpointing in (False, True):
        config = tiny_config(steps=2, loss="wgan-gp", n_critic=1)
        config.model.activation_checkpointing = checkpointing
        events = list(api.train(config, tmp_path / f"ckpt{checkpointing}"))
        losses = [e.losses for e in events if e.kind == "step"]
        runs.append((losses, load_checkpoint(events[-1].checkpoint).weights))
    (plain_losses, plain_weights), (losses, weights) = runs
    for got, want in zip(losses, plain_losses, strict=True):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert weights.keys() == plain_weights.keys()


def test_fused_adam_follows_the_config_also_on_resume(tiny_config):
    from napari_medgan.core.tasks.synthesis import SynthesisTask

    cpu = torch.device("cpu")
    fused = SynthesisTask(tiny_config(fused_adam="on"), cpu)
    assert all(group["fused"] for opt in fused.optimizers.values() for group in opt.param_groups)
    batch = {"image": torch.rand(2, 1, 16, 16, 16) * 2 - 1}
    fused.train_step(lambda: batch, 1)
    tensors, meta = fused.training_state()
    plain = SynthesisTask(tiny_config(), cpu)  # "auto": fused on CUDA only
    plain.load_training_state(tensors, meta)
    assert not any(group["fused"] for opt in plain.optimizers.values()
                   for group in opt.param_groups)
    moments = [state["exp_avg"] for state in plain.optimizers["G"].state.values()]
    assert moments and all(m.abs().sum() > 0 for m in moments)  # the saved state was loaded


def test_bf16_autocast_where_the_device_computes_it(tiny_config):
    from napari_medgan.core.speed import cpu_computes_bf16
    from napari_medgan.core.tasks.synthesis import SynthesisTask

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux says which instructions the CPU has
        flags = set(cpuinfo.read_text().split())
        assert cpu_computes_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)
    cpu = torch.device("cpu")
    task = SynthesisTask(tiny_config(), cpu)
    assert task.use_amp == cpu_computes_bf16()
    assert not SynthesisTask(tiny_config(amp=False), cpu).use_amp
    with task.autocast():
        patches = task.nets["G"](task.noise(2))
    assert patches.dtype == (torch.bfloat16 if task.use_amp else torch.float32)
    with torch.no_grad(), task.autocast():  # CPU inference: float32, not quantised to bf16
        assert task.nets["G"](task.noise(2)).dtype == torch.float32
    sample = task.sample(2, seed=0)
    assert sample.unique().numel() > 0.9 * sample.numel()  # bf16 in [-1, 1]: ~1,300 values


COMPILED_STEPS = """
import sys, torch
from napari_medgan.core.config import load_config
from napari_medgan.core.speed import compile_nets
from napari_medgan.core.tasks.anomaly import AnomalyTask
from napari_medgan.core.tasks.synthesis import SynthesisTask
config = load_config(sys.argv[1])
batches = lambda: {"image": torch.rand(2, 1, 16, 16, 16) * 2 - 1}
for task_class, r1_weight, left_eager in ((SynthesisTask, None, ["D"]),  # R1, the default
                                          (SynthesisTask, 0.0, []),
                                          (AnomalyTask, None, ["D"])):  # WGAN-GP's penalty
    config.task, config.train.r1_weight = task_class.name, r1_weight
    task = task_class(config, torch.device("cpu"))
    names = list(task.weights())
    # aot_eager: the autograd of inductor, without its minutes of code generation
    assert compile_nets(task.config, task.nets, backend="aot_eager") == left_eager
    compiled = {n for n, net in task.nets.items() if net._compiled_call_impl is not None}
    assert compiled == set(task.nets) - {"G_ema", *left_eager}, compiled  # G_ema: no grad
    assert list(task.weights()) == names  # checkpoints keep their weight names
    for step in (1, 2):
        losses = task.train_step(batches, step)
        assert all(torch.isfinite(loss) for loss in losses.values()), losses
"""


def test_compiled_nets_train_with_the_penalised_critic_left_eager(tiny_config, tmp_path):
    """torch.compile's autograd has no double backward, which R1 and WGAN-GP's penalty
    take through D: D stays eager, and compiled steps run. The aot_eager backend shares
    inductor's autograd (a compiled D failed there as with inductor); inductor itself took
    277 s for a tiny run's first step on the 2-core CPU (bench/README.md), too slow for a
    test. In a fresh process: inductor reads its templates in the C library's current
    encoding, which a library loaded by an earlier test in this process was seen to leave
    at ASCII."""
    import subprocess
    import sys

    from napari_medgan.core.config import save_config

    config = save_config(tiny_config(compile=True), tmp_path / "compile.yaml")
    done = subprocess.run([sys.executable, "-c", COMPILED_STEPS, str(config)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
