"""The memory plan (#11): a config that can't fit is refused before any step, with the estimate."""

import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.distributed import World
from napari_medgan.core.errors import ConfigError
from napari_medgan.core.memory import (
    MemoryPlan,
    _PeakBytes,
    _step_bytes,
    available_bytes,
    check_memory,
    plan_memory,
)
from napari_medgan.core.tasks.registry import get_task_class


def test_a_config_far_beyond_the_memory_is_refused_with_the_estimate(tiny_config, tmp_path):
    config = tiny_config()
    config.model.patch_size, config.train.batch_size = 32, 10_000_000
    with pytest.raises(ConfigError) as refused:
        next(api.train(config, tmp_path / "ckpt"))
    message = str(refused.value)
    assert "patch 32³ and batch 10000000" in message
    assert "would need about" in message and "TiB" in message and "is available" in message
    assert "--batch " in message and "--patch 16" in message
    assert "model.activation_checkpointing: true" in message
    assert not (tmp_path / "ckpt").exists()  # refused before anything was written


@pytest.mark.parametrize("amp", [False, True])  # bf16 autocast where the CPU computes bf16
def test_the_tiny_config_fits_and_its_estimate_matches_a_measured_step(tiny_config, amp):
    config = tiny_config(amp=amp)
    config.train.batch_size = 4
    task_class, device = get_task_class("synthesis"), torch.device("cpu")
    volume = api.read_volume(config.data.paths[0]).tensor

    def make_task():
        return task_class(config, device, 1, 0)

    plan = plan_memory(config, make_task, {"image": [volume]}, World(device=device))
    assert plan.fits(4) and plan.per_patch > 0
    patch = volume[:, :16, :16, :16].clone()[None]
    measured = _step_bytes(make_task, {"image": patch}, 4, device)
    # extrapolated from batches 2 and 3 to batch 4: linear in the batch
    assert plan.step_bytes == pytest.approx(measured, rel=0.1)


def test_under_torchrun_each_process_plans_its_share_of_batch_and_memory(tiny_config):
    """The global batch of 4 over 2 processes is 2 each; on the CPU the 2 processes of
    this machine share its RAM, so each may take half of it."""
    config = tiny_config()
    config.train.batch_size = 4
    task_class, device = get_task_class("synthesis"), torch.device("cpu")
    volume = api.read_volume(config.data.paths[0]).tensor
    world = World(rank=0, size=2, device=device, local_size=2)  # no process group needed
    plan = plan_memory(config, lambda: task_class(config, device, 1, 0), {"image": [volume]},
                       world)
    assert plan.batch_size == 2 and plan.processes == 2
    assert plan.available == pytest.approx(available_bytes(device) / 2, rel=0.05)


def test_a_refusal_under_torchrun_names_the_batch_per_process_and_a_global_batch_that_fits(
        tiny_config):
    gib = 2**30
    plan = MemoryPlan(torch.device("cpu"), fixed=gib, per_patch=gib, batch_size=4,
                      available=3 * gib, processes=2)
    with pytest.raises(ConfigError) as refused:
        check_memory(plan, tiny_config())
    message = str(refused.value)
    assert "batch 4 per process (the global batch 8 over 2 processes)" in message
    assert "would need about 5.0 GiB" in message and "3.0 GiB is available to each" in message
    # (3 GiB / 1.1 − 1 GiB) per patch: 1 patch a process, the global batch 2
    assert "(--batch 2)" in message


def test_the_byte_counter_sees_new_storage_and_not_views():
    big = torch.zeros(1000)
    with _PeakBytes() as counter:
        big.view(10, 100).t()  # views of storage that was already there: nothing new
        big.add_(1)
        temporary = torch.ones(256, dtype=torch.float64)
        del temporary
        kept = torch.ones(128)
    assert counter.peak == 256 * 8
    assert counter.live == 128 * 4 and kept.sum() == 128
