"""Training on several processes with torch.distributed: everything distributed lives here.

``torchrun`` (or ``medgan train --nproc N``, which runs torchrun's launcher) starts one
process per GPU, or per CPU share, and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous address in their environment; :func:`join` reads them. A process started
without them is a world of one, where every method here is free and changes nothing.

What a distributed run means here:

- ``train.batch_size`` is the **global** batch: each of N processes cuts batch_size / N
  patches, so learning rates and the card's config mean the same thing for any N.
- Random draws (patch corners, latent noise) come from streams every process holds
  alike: each draws the numbers of the whole global batch and keeps its own slice. The
  processes see different patches, together exactly those a single process would see,
  and the random state is the same everywhere: rank 0's checkpoint resumes exactly onto
  any number of processes.
- Each net an optimiser trains is wrapped in its own ``DistributedDataParallel``, which
  averages its gradients. BatchNorm keeps per-process batch statistics (see the README).
- Losses reported in events are averaged over the processes; a stop request seen by any
  process stops all of them at the same step; only rank 0 writes checkpoints and events.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import torch
from torch import nn

from .errors import ConfigError, DeviceError


@dataclass(frozen=True)
class World:
    """This process's place among those training together."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    local_size: int = 1  # the processes on this machine, which share its RAM

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, events and progress."""
        return self.rank == 0

    def share(self, draw: Callable[[int], torch.Tensor], n: int) -> torch.Tensor:
        """``n`` random rows for this process: ``draw(n * size)`` from a stream all processes
        share, this process's slice of it."""
        if self.size == 1:
            return draw(n)
        return draw(n * self.size)[self.rank * n:(self.rank + 1) * n]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any process (a stop request reaching one stops all)."""
        if self.size == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """0-d tensors as floats, averaged over the processes (one all-reduce)."""
        if self.size == 1 or not values:
            return {name: float(value) for name, value in values.items()}
        import torch.distributed as dist

        stacked = torch.stack([value.detach().float() for value in values.values()])
        stacked = stacked.to(self.device)
        dist.all_reduce(stacked)
        stacked = stacked / self.size
        return dict(zip(values, stacked.tolist(), strict=True))

    def wrap(self, net: nn.Module) -> nn.Module:
        """``net`` in a ``DistributedDataParallel`` wrapper, which averages its gradients."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids)

    def per_process(self, batch_size: int) -> int:
        """This process's share of the global ``batch_size``."""
        if batch_size % self.size:
            raise ConfigError(
                f"train.batch_size is the global batch; {batch_size} can't be split evenly "
                f"over {self.size} processes: use a multiple of {self.size} (--batch)."
            )
        return batch_size // self.size


def is_main_process() -> bool:
    """Whether this process prints and writes (rank 0, or not started by torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def join(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo on
    the CPU); on CUDA each process takes the GPU of its ``LOCAL_RANK``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(device=device)
    import torch.distributed as dist

    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise DeviceError(
                f"Process {local} of this machine needs GPU cuda:{local}, but there are "
                f"{torch.cuda.device_count()}; start at most one process per GPU "
                "(--nproc / --nproc_per_node).")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return World(dist.get_rank(), dist.get_world_size(), device,
                 int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def exit_process(code: int) -> NoReturn:
    """End this process with ``code``; one of several training together ends without the
    interpreter's finalisation.

    Gloo's worker threads free the last collective's work a moment after it completes; if
    that happens while the interpreter finalises, freeing its tensors needs the GIL and
    aborts the process (SIGABRT, "terminate called without an active exception"; seen
    about once in twelve runs on rank 1, a core dump shows the work's destructor in
    ProcessGroupGloo::runLoop). Destroying the group first does not help: it leaves
    gloo's threads running. Checkpoints are written and closed by then.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def launch_training(nproc: int, cli_args: list[str]) -> int | None:
    """Run ``python -m napari_medgan.cli <cli_args>`` on ``nproc`` processes of this machine
    with torchrun's own launcher (rendezvous c10d on a free local port).

    Returns 0 when every process finished; the exit code of the first process that failed
    (the launcher then stops the others); ``None`` when the launcher itself was asked to
    stop (SIGTERM, Ctrl-C): it passes the signal on once, each process stops after its step
    and rank 0 writes the checkpoint, within torchrun's shutdown timeout (30 s by default,
    ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``).
    """
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    # the caller reports the outcome in one line; torchrun's log would repeat it in many
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args([
        "--nnodes", "1", f"--nproc-per-node={nproc}", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "localhost:0", "--rdzv-id", uuid.uuid4().hex,
        "-m", "napari_medgan.cli", *cli_args,
    ])
    config, command, command_args = config_from_args(args)
    try:
        elastic_launch(config, command)(*command_args)
    except ChildFailedError as err:
        return err.get_first_failure()[1].exitcode
    except SignalException:
        return None
    return 0
