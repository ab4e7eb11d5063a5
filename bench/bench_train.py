"""Train-loop throughput: medgan's loop against a bare PyTorch loop over the same nets and batch.

The bare loop is the floor of what any GAN loop costs (a D step and a G step on
a batch already in memory); the ratio says what events, patch sampling, NaN
checks and EMA add. Both run with and without ``channels_last_3d``, in float32 and
without R1 (the bare loop has neither); one more row is medgan's loop with bf16 autocast
(``train.amp``, its default where the device computes bf16). The sampler's share: the
time of cutting one batch the way training cuts it (``data.sampler`` as configured, on
``--device``) over the time of medgan's whole step.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
from _common import real_volume_file, report

from napari_medgan.core import api
from napari_medgan.core.data.task_data import BatchSource, load_task_data
from napari_medgan.core.losses import discriminator_loss, generator_loss
from napari_medgan.core.nets.dcgan import DCGANDiscriminator3D, DCGANGenerator3D
from napari_medgan.core.nets.ema import update_ema


def config(args, channels_last: bool, amp: bool = False) -> api.Config:
    c = api.Config()
    c.data.paths = [real_volume_file()]
    c.model.patch_size = args.patch
    c.model.latent_dim, c.model.g_channels, c.model.d_channels = 64, 16, 16
    c.model.max_channels = 128
    c.train.batch_size, c.train.device = args.batch, args.device
    c.train.steps = args.warmup + args.steps + 1  # the last step also makes the final preview
    c.train.preview_every = c.train.checkpoint_every = 10**9
    c.train.channels_last = "on" if channels_last else "off"
    c.train.amp = amp  # bf16 autocast, where the device computes bf16 (the bare loop: float32)
    c.train.r1_weight = 0.0  # as the bare loop
    c.data.sampler = args.sampler
    return c


def medgan_loop(args, channels_last: bool, amp: bool = False) -> float:
    started = None
    with tempfile.TemporaryDirectory() as tmp:
        for event in api.train(config(args, channels_last, amp), f"{tmp}/ckpt"):
            if event.kind == "step" and event.step == args.warmup:
                started = time.perf_counter()
            if event.kind == "step" and event.step == args.warmup + args.steps:
                return args.steps / (time.perf_counter() - started)
    raise RuntimeError("training ended early")


def bare_loop(args, channels_last: bool) -> float:
    """The same nets, optimisers, loss and EMA, on one fixed batch: no sampling, no events."""
    c = config(args, channels_last)
    m, device = c.model, torch.device(args.device)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    G = DCGANGenerator3D(m.latent_dim, 1, m.patch_size, m.g_channels, m.max_channels, m.upsample)
    D = DCGANDiscriminator3D(1, m.patch_size, m.d_channels, m.max_channels)
    G, D = G.to(device, memory_format=layout), D.to(device, memory_format=layout)
    G_ema = copy.deepcopy(G)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    p = m.patch_size
    real = torch.rand(args.batch, 1, p, p, p, device=device).mul(2).sub(1)
    real = real.contiguous(memory_format=layout)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        fake = G(torch.randn(args.batch, m.latent_dim, device=device))  # D's and G's batch
        loss_d = discriminator_loss("nonsaturating", D(real), D(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = generator_loss("nonsaturating", D(fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        update_ema(G_ema, G, 0.999, step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps / (time.perf_counter() - started)


def sampler_seconds(args) -> float:
    """Seconds to cut one batch as training does, on the training device."""
    c = config(args, channels_last=False)
    device = torch.device(args.device)
    batches = BatchSource(load_task_data(c, api.get_task_class(c.task).needs), c, device)
    for _ in range(args.warmup):
        batches()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        batches()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sampler", choices=["device", "queue"], default="device")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for channels_last in (False, True):
        results[("bare", channels_last)] = bare_loop(args, channels_last)
        results[("medgan", channels_last)] = medgan_loop(args, channels_last)
    results[("medgan, bf16 autocast", True)] = medgan_loop(args, True, amp=True)
    base = results[("bare", False)]
    sampling = sampler_seconds(args)
    rows = []
    for (loop, channels_last), rate in results.items():
        same_layout_bare = results[("bare", channels_last)]
        rows.append(
            [
                loop,
                "channels_last_3d" if channels_last else "contiguous",
                f"{rate:.2f}",
                f"{rate / base:.2f}",
                f"{rate / same_layout_bare:.2f}",
                f"{100 * sampling * rate:.2f} %" if loop.startswith("medgan") else "–",
            ]
        )
    report(
        "train_loop",
        ["loop", "layout", "steps/s", "vs bare contiguous", "vs bare same layout",
         "sampler share"],
        rows,
        {"patch": args.patch, "batch": args.batch, "device": args.device, "steps": args.steps,
         "sampler": args.sampler, "sampler_s_per_batch": sampling},
    )


if __name__ == "__main__":
    main()
