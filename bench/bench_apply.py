"""Whole-volume inference: medgan's sliding window against MONAI's sliding_window_inference.

The same randomly initialised translation U-Net, patch, overlap and batch; our "hann"
against MONAI's "gaussian" blending and our "average" against its "constant". Each case
runs in a fresh process: wall time of the call, and peak resident memory during it
minus the resident memory just before (the volume and net already loaded; VmHWM reset
through /proc/self/clear_refs). The outputs are compared away from the borders (one
patch in from each face), where both grids have covered every voxel alike (the same
where the blending weights are the same: average / constant). ``--repeats``: each pair runs
that many times, taking turns (each going first in turn), and the medians are compared.
MONAI is only in the bench extra (pip install napari-medgan[bench]).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from _common import report
from safetensors.torch import load_file

CHILD = r"""
import json, sys, time, torch
impl, blend, volume_name, patch, overlap, batch, out, net_name = sys.argv[1:9]
patch, overlap, batch = int(patch), float(overlap), int(batch)
torch.manual_seed(0)
# both libraries in every process, whichever runs: the same imports, the same process state
from monai.inferers import sliding_window_inference
from napari_medgan.core.infer import sliding_window
from napari_medgan.core.nets.unet import UNet3D
net = (UNet3D(1, 1, (4, 8, 16)) if net_name == "unet" else torch.nn.Conv3d(1, 1, 1)).eval()
if volume_name == "mni152_t1":
    from napari_medgan.core.data.samples import sample_volume
    volume = sample_volume("mni152_t1").tensor.float()
    volume = (volume - volume.mean()) / volume.std()
else:  # a CT-sized volume: 512 x 512 x 300
    volume = torch.randn(1, 512, 512, 300)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
if impl == "monai":
    mode = {"hann": "gaussian", "average": "constant"}[blend]
    def run():
        with torch.no_grad():
            return sliding_window_inference(volume[None], (patch,) * 3, batch, net,
                                            overlap=overlap, mode=mode)[0]
else:
    def run():
        return sliding_window(volume, net, patch, overlap=overlap, batch_size=batch, blend=blend)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
started = time.perf_counter()
result = run()
seconds = time.perf_counter() - started
peak = status("VmHWM")
from safetensors.torch import save_file
save_file({"output": result.contiguous()}, out)
print(json.dumps({"seconds": seconds, "peak_mib": peak - before, "shape": list(volume.shape)}))
"""


def run_case(impl: str, blend: str, volume: str, args, out: Path) -> dict:
    here = Path(__file__).resolve().parent
    env_path = f"{here.parent}:{here}"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, impl, blend, volume, str(args.patch), str(args.overlap),
         str(args.batch), str(out), args.net],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", nargs="+", default=["mni152_t1", "ct512"])
    parser.add_argument("--blends", nargs="+", default=["hann", "average"])
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each case, medians")
    parser.add_argument("--net", choices=["unet", "pointwise"], default="unet",
                        help="pointwise: a 1³ convolution, to time and size the stitching alone")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for volume in args.volumes:
            for blend in args.blends:
                runs = {"medgan": [], "monai": []}
                for repeat in range(args.repeats):  # each goes first in turn
                    for impl in list(runs)[::-1 if repeat % 2 else 1]:
                        out = Path(tmp) / f"{impl}.safetensors"
                        runs[impl].append(run_case(impl, blend, volume, args, out))
                cases = {impl: {"shape": kept[0]["shape"],
                                "seconds": median(r["seconds"] for r in kept),
                                "peak_mib": median(r["peak_mib"] for r in kept),
                                "output": load_file(Path(tmp) / f"{impl}.safetensors")["output"]}
                         for impl, kept in runs.items()}
                p = args.patch
                inner = (slice(None), *[slice(p, -p)] * 3)
                diff = (cases["medgan"]["output"][inner] - cases["monai"]["output"][inner])
                ours, theirs = cases["medgan"], cases["monai"]
                rows.append([
                    volume, "x".join(map(str, ours["shape"][1:])),
                    f"{blend} / {'gaussian' if blend == 'hann' else 'constant'}",
                    f"{ours['seconds']:.1f}", f"{theirs['seconds']:.1f}",
                    f"{ours['seconds'] / theirs['seconds']:.2f}",
                    f"{ours['peak_mib']:.0f}", f"{theirs['peak_mib']:.0f}",
                    f"{ours['peak_mib'] / max(theirs['peak_mib'], 1):.2f}",
                    f"{diff.abs().max().item():.3g}",
                ])
                print(rows[-1], flush=True)
    report(
        f"apply_{args.net}",
        ["volume", "shape", "blend (ours / MONAI)", "ours s", "MONAI s", "time ×",
         "ours MiB", "MONAI MiB", "memory ×", "max |diff| inside"],
        rows,
        {"patch": args.patch, "overlap": args.overlap, "batch": args.batch,
         "repeats": args.repeats,
         "net": "UNet3D(1, 1, (4, 8, 16))" if args.net == "unet" else "Conv3d(1, 1, 1)",
         "weights": "random, seed 0"},
    )


if __name__ == "__main__":
    main()
