"""The device menu faces show, and the error for a GPU that isn't there."""

from __future__ import annotations

import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.device import resolve_device
from napari_medgan.core.errors import DeviceError


def test_device_choices_list_auto_cpu_and_each_gpu():
    choices = api.device_choices()
    specs = [spec for _, spec in choices]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert specs == ["auto", "cpu"] + [f"cuda:{i}" for i in range(gpus)]
    for spec in specs:  # every choice is a device the core accepts here
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none_says_what_to_do():
    with pytest.raises(DeviceError, match="no CUDA GPU.*cpu"):
        resolve_device("cuda")
