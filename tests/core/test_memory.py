"""The memory plan (#11): a config that can't fit is refused before any step, with the estimate."""

import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.errors import ConfigError
from napari_medgan.core.memory import _PeakBytes, _step_bytes, plan_memory
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


def test_the_tiny_config_fits_and_its_estimate_matches_a_measured_step(tiny_config):
    config = tiny_config()
    config.train.batch_size = 4
    task_class, device = get_task_class("synthesis"), torch.device("cpu")
    volume = api.read_volume(config.data.paths[0]).tensor

    def make_task():
        return task_class(config, device, 1, 0)

    plan = plan_memory(config, make_task, {"image": [volume]}, device)
    assert plan.fits(4) and plan.per_patch > 0
    patch = volume[:, :16, :16, :16].clone()[None]
    measured = _step_bytes(make_task, {"image": patch}, 4, device)
    # extrapolated from batches 1 and 2 to batch 4: linear in the batch
    assert plan.step_bytes == pytest.approx(measured, rel=0.1)


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
