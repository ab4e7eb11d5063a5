"""The distributed plumbing's arithmetic, without starting processes (see tests/cli for those)."""

import os
import subprocess
import sys

import pytest
import torch

from napari_medgan.cli import _without_nproc
from napari_medgan.core.data.patches import DevicePatchSampler
from napari_medgan.core.distributed import World
from napari_medgan.core.errors import ConfigError


def test_the_processes_shares_of_a_draw_make_up_the_single_process_draw():
    volume = torch.arange(20 * 20 * 20, dtype=torch.float32).reshape(1, 20, 20, 20)

    def sampler(world):
        return DevicePatchSampler([volume], 8, 6 // world.size, device="cpu", seed=3,
                                  world=world)

    alone = sampler(World()).next_batch()
    shares = [sampler(World(rank=r, size=3)).next_batch() for r in range(3)]
    assert torch.equal(torch.cat(shares), alone)


def test_the_global_batch_must_split_evenly():
    assert World(rank=1, size=4).per_process(8) == 2
    with pytest.raises(ConfigError, match="multiple of 4"):
        World(rank=0, size=4).per_process(6)


def test_the_shortcut_passes_everything_but_nproc_on():
    assert _without_nproc(["train", "--nproc", "2", "--steps", "3", "--nproc=4"]) == [
        "train", "--steps", "3"]


@pytest.mark.parametrize(("world_size", "finalised"), [("1", True), ("2", False)])
def test_a_process_of_several_exits_without_finalisation(world_size, finalised):
    # gloo's workers may free a collective's tensors during finalisation and abort the
    # process; one of several therefore leaves with os._exit, its output flushed
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('finalised'))\n"
              "print('printed', end='')\n"
              "from napari_medgan.core.distributed import exit_process\n"
              "exit_process(3)\n")
    env = {**os.environ, "WORLD_SIZE": world_size}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 3
    assert result.stdout.startswith("printed")
    assert ("finalised" in result.stdout) == finalised
