"""Distributed training: 1 process against N under torchrun, at the same global batch.

Each run is the real command a user types (``torchrun --nproc_per_node N -m
napari_medgan.cli train ... --events jsonl``); steps/s is timed from the events rank 0
prints, between the end of the warm-up and the last timed step, so process start,
rendezvous and data loading are left out. On the CPU (gloo) the processes share the
same cores, so the ratio shows the cost of the gradient all-reduce and of splitting the
batch; on N GPUs (NCCL) it is the scaling (goal >= 1.8x for 2). On the CPU a third run,
one process on one thread, is the baseline with the threads each of the N processes
gets (torchrun gives each ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import real_volume_file, report


def steps_per_s(args, nproc: int, folder: Path, threads: int | None = None) -> float:
    config = folder / "bench.yaml"
    config.write_text(
        f"model: {{patch_size: {args.patch}, latent_dim: 64, g_channels: 16, d_channels: 16,"
        " max_channels: 128}\n"
        f"train: {{batch_size: {args.batch}, device: {args.device},"
        " preview_every: 1000000000, checkpoint_every: 1000000000}\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "-m", "napari_medgan.cli", "train", "--config", str(config),
               "--data", real_volume_file(), "--steps", str(args.warmup + args.steps + 1),
               "--out", str(folder / f"ckpt-{nproc}-{threads}"), "--events", "jsonl"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1",
                                     **({"OMP_NUM_THREADS": str(threads)} if threads else {})))
    started = None
    for line in proc.stdout:
        step = json.loads(line)["step"]
        if step == args.warmup:
            started = time.perf_counter()
        elif step == args.warmup + args.steps:
            rate = args.steps / (time.perf_counter() - started)
            proc.wait()
            return rate
    raise RuntimeError(f"the {nproc}-process run ended early: {proc.stderr.read()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL)")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the second run")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="the global batch")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    runs = [(1, None), (args.nproc, None)]  # None: torch's default threads (1 under N > 1)
    if args.device == "cpu":
        runs.insert(1, (1, 1))
    with tempfile.TemporaryDirectory() as tmp:
        rates = [steps_per_s(args, n, Path(tmp), threads) for n, threads in runs]
    rows = [[n, threads or ("1" if n > 1 else "default"), args.batch // n, f"{rate:.2f}",
             f"{rate / rates[0]:.2f}"] for (n, threads), rate in zip(runs, rates, strict=True)]
    report("distributed", ["processes", "threads each", "batch per process", "steps/s",
                           "vs first row"], rows,
           {"device": args.device, "patch": args.patch, "global_batch": args.batch,
            "timed_steps": args.steps, "cpu_count": os.cpu_count()})


if __name__ == "__main__":
    main()
