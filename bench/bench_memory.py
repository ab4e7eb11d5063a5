"""Peak memory of one training step for patch 16³, 32³, 64³ (batch 8, the demo's nets).

CPU: in a fresh process, the peak resident memory (VmHWM) during three steps, after
the peak was reset (/proc/self/clear_refs) once data and nets were ready, minus the
resident memory at that moment. CUDA: torch.cuda.max_memory_allocated over the steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import report

CHILD = r"""
import json, sys, tempfile, torch
sys.path.insert(0, sys.argv[4])
from _common import real_volume_file
from napari_medgan.core import api
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
patch, batch, device = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = api.Config()
c.data.paths = [real_volume_file()]
c.model.patch_size, c.model.latent_dim = patch, 64
c.model.g_channels, c.model.d_channels, c.model.max_channels = 8, 16, 128
c.train.batch_size, c.train.device, c.train.steps = batch, device, 4
c.train.preview_every = c.train.checkpoint_every = 10**9
with tempfile.TemporaryDirectory() as tmp:
    events = api.train(c, tmp + "/ckpt")
    next(events)  # data loaded, nets built
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident memory
    before = status("VmRSS")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for e in events:
        if e.kind == "step" and e.step == 3:
            break
    peak = status("VmHWM")
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
print(json.dumps({"rss_before_mib": before, "rss_peak_mib": peak, "gpu_peak_mib": gpu}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patches", type=int, nargs="+", default=[16, 32, 64])
    args = parser.parse_args()
    here = __file__.rsplit("/", 1)[0]
    rows = []
    for patch in args.patches:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(patch), str(args.batch), args.device, here],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        m = json.loads(out.strip().splitlines()[-1])
        step_mib = m["rss_peak_mib"] - m["rss_before_mib"]
        gpu = f"{m['gpu_peak_mib']:.0f}" if m["gpu_peak_mib"] is not None else "-"
        rows.append([f"{patch}³", args.batch, f"{m['rss_peak_mib']:.0f}", f"{step_mib:.0f}", gpu])
    report(
        "memory",
        ["patch", "batch", "peak RSS MiB", "step adds MiB", "GPU peak MiB"],
        rows,
        {"device": args.device},
    )


if __name__ == "__main__":
    main()
