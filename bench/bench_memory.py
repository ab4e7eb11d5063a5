"""Cost growth of a training step: time and peak memory for patch 16³, 32³, 64³ (128³ with
``--device cuda``), batch 8, the demo's nets, and the exponent fitted against voxel count.

Time: the mean of steps 2 and 3. Memory, CPU: in a fresh process, the peak resident
memory (VmHWM) during three steps, after the peak was reset (/proc/self/clear_refs) once
data and nets were ready, minus the resident memory at that moment. CUDA:
torch.cuda.max_memory_allocated over the steps.

``--largest``: the largest patch (power of two up to 256³) that trains three steps at
batch 1 and at batch 4 — refused by the memory plan or out of memory beyond it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
from _common import report

CHILD = r"""
import json, sys, tempfile, time, torch
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
        if e.kind == "step" and e.step == 1:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
        if e.kind == "step" and e.step == 3:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            step_s = (time.perf_counter() - started) / 2
            break
    peak = status("VmHWM")
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
print(json.dumps({"rss_before_mib": before, "rss_peak_mib": peak, "gpu_peak_mib": gpu,
                  "step_s": step_s}))
"""


def child(patch: int, batch: int, device: str, here: str) -> dict | None:
    """One fresh process's measurements; None if the config was refused or ran out of memory."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(patch), str(batch), device, here],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        if "ConfigError" in proc.stderr or "DeviceError" in proc.stderr:
            return None
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def largest(device: str, here: str) -> None:
    rows = []
    for batch in (1, 4):
        fits = None
        for patch in (32, 64, 128, 256):
            if child(patch, batch, device, here) is None:
                break
            fits = patch
        rows.append([batch, f"{fits}³" if fits else "none"])
    report("largest_patch", ["batch", "largest patch that trains"], rows, {"device": device})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patches", type=int, nargs="+")
    parser.add_argument("--largest", action="store_true")
    args = parser.parse_args()
    here = __file__.rsplit("/", 1)[0]
    if args.largest:
        largest(args.device, here)
        return
    if args.patches is None:
        args.patches = [16, 32, 64, 128] if args.device.startswith("cuda") else [16, 32, 64]
    rows, fit = [], {"voxels": [], "seconds": [], "mib": []}
    for patch in args.patches:
        m = child(patch, args.batch, args.device, here)
        if m is None:
            print(f"patch {patch}³ at batch {args.batch}: refused or out of memory")
            continue
        step_mib = m["rss_peak_mib"] - m["rss_before_mib"]
        gpu = f"{m['gpu_peak_mib']:.0f}" if m["gpu_peak_mib"] is not None else "-"
        rows.append([f"{patch}³", args.batch, f"{m['step_s']:.3f}", f"{m['rss_peak_mib']:.0f}",
                     f"{step_mib:.0f}", gpu])
        fit["voxels"].append(patch**3)
        fit["seconds"].append(m["step_s"])
        fit["mib"].append(m["gpu_peak_mib"] if m["gpu_peak_mib"] is not None else step_mib)
    logv = np.log(fit["voxels"])
    exponents = {f"{what} exponent": round(float(np.polyfit(logv, np.log(fit[what]), 1)[0]), 2)
                 for what in ("seconds", "mib")}
    print(f"fitted against voxel count: time ∝ voxels^{exponents['seconds exponent']}, "
          f"step memory ∝ voxels^{exponents['mib exponent']}")
    report(
        "memory",
        ["patch", "batch", "s/step", "peak RSS MiB", "step adds MiB", "GPU peak MiB"],
        rows,
        {"device": args.device, **exponents},
    )


if __name__ == "__main__":
    main()
