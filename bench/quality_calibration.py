"""How far from real is a C2ST AUC, and what does the test find in a generator's patches?

Calibration: two disjoint sets of real patches of the training region (the MNI152 left hemisphere,
centred in its tissue mask, normalised as the bench's default model sees them) go through
the classifier two-sample test of ``api.evaluate``; the second set is first spoilt by one
known fault: blur, noise, an intensity shift or 2-voxel blocks. The table is the scale
to read a generator's AUC on: a fault that scores 0.84 is as visible to the test as a
generator that scores 0.84.

Diagnosis: the default model's synthetic patches against real ones of its training region,
both seen through the same transform (voxels shuffled within each patch: histograms only;
both blurred: coarse anatomy only; high-pass residual only), and the 2-voxel phase
pattern of nearest upsampling (mean |difference| within voxel pairs ÷ across pairs, per
axis: 1 in real data).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from quality_synthesis import mean_and_range, trained_model

from napari_medgan.core.api import _foreground_patches, _training_region, load_model
from napari_medgan.core.realism import c2st

REFERENCE_VARIANT = "R1 (weight 1)"  # the default model: its normalisation and region


def gaussian_blur(patches: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with replicated borders."""
    radius = max(1, round(3 * sigma))
    kernel = torch.arange(-radius, radius + 1.0).div(sigma).pow(2).mul(-0.5).exp()
    kernel /= kernel.sum()
    for axis in range(3):
        shape, pad = [1, 1, 1, 1, 1], [0] * 6
        shape[2 + axis] = len(kernel)
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        patches = F.conv3d(F.pad(patches, pad, mode="replicate"), kernel.view(shape))
    return patches


def noisy(patches: torch.Tensor, std: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (patches + std * torch.randn(patches.shape, generator=generator)).clamp(-1, 1)


def blocky(patches: torch.Tensor) -> torch.Tensor:
    """Averaged over 2³ blocks and copied back: the look of nearest upsampling."""
    return F.interpolate(F.avg_pool3d(patches, 2), scale_factor=2, mode="nearest")


FAULTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none (two real sets)": lambda x: x,
    "blur σ 0.3 voxel": lambda x: gaussian_blur(x, 0.3),
    "blur σ 0.5 voxel": lambda x: gaussian_blur(x, 0.5),
    "blur σ 0.7 voxel": lambda x: gaussian_blur(x, 0.7),
    "noise std 0.01 (0.5 % of the range)": lambda x: noisy(x, 0.01),
    "noise std 0.02": lambda x: noisy(x, 0.02),
    "noise std 0.05": lambda x: noisy(x, 0.05),
    "intensity shift +0.05": lambda x: (x + 0.05).clamp(-1, 1),
    "contrast × 0.9 about the mean": lambda x: (x.mean() + 0.9 * (x - x.mean())).clamp(-1, 1),
    "2-voxel blocks": blocky,
}


def shuffled(patches: torch.Tensor) -> torch.Tensor:
    """Each patch's voxels in a random order: only its histogram is left."""
    flat = patches.flatten(1)
    order = torch.rand(flat.shape, generator=torch.Generator().manual_seed(0)).argsort(1)
    return flat.gather(1, order).view_as(patches)


SEEN_AS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "as they are": lambda x: x,
    "voxels shuffled in each patch": shuffled,
    "both blurred σ 1 voxel": lambda x: gaussian_blur(x, 1.0),
    "both blurred σ 2 voxels": lambda x: gaussian_blur(x, 2.0),
    "high-pass only (minus blur σ 1)": lambda x: x - gaussian_blur(x, 1.0),
}


def pair_phase(patches: torch.Tensor) -> list[float]:
    """Per axis, mean |difference| within voxel pairs (2i, 2i+1) ÷ across them (2i+1, 2i+2)."""
    ratios = []
    for axis in (2, 3, 4):
        size = patches.shape[axis] - patches.shape[axis] % 2
        even, odd = (patches.index_select(axis, torch.arange(start, size, 2)) for start in (0, 1))
        within = (even - odd).abs().mean()
        across = (odd.narrow(axis, 0, size // 2 - 1) - even.narrow(axis, 1, size // 2 - 1))
        ratios.append(float(within / across.abs().mean()))
    return ratios


def diagnosis(model, real: torch.Tensor, seeds: int) -> list[list]:
    synthetic = model.task.sample(len(real), seed=0).cpu()
    rows = []
    for name, seen in SEEN_AS.items():
        aucs = [c2st(seen(real), seen(synthetic), seed=seed)["auc"] for seed in range(seeds)]
        rows.append([f"synthetic vs real, {name}", mean_and_range(aucs)])
        print(rows[-1], flush=True)
    for name, patches in (("real", real), ("synthetic", synthetic)):
        phase = " / ".join(f"{r:.2f}" for r in pair_phase(patches))
        rows.append([f"{name}: within ÷ across voxel pairs, axes 0 / 1 / 2", phase])
    return rows


def main(argv: list[str]) -> None:
    import argparse

    from _common import report

    parser = argparse.ArgumentParser(prog="bench_quality.py calibration", description=__doc__)
    parser.add_argument("--n", type=int, default=64, help="patches per set, as in evaluate")
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=600.0,
                        help="the default model of the synthesis bench to diagnose (CPU s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.retrain, args.patch, args.batch = False, 32, 8  # the synthesis bench's settings
    out, _, _ = trained_model("mni152", REFERENCE_VARIANT, args.budget, args)
    model = load_model(out, device="cpu")
    files, masks = _training_region(model, None)
    (real,) = _foreground_patches(model, files, [(2 * args.n, 1)], masks=masks)
    first, second = real[:args.n], real[args.n:]
    rows = []
    for name, fault in FAULTS.items():
        spoilt = fault(second)
        aucs = [c2st(first, spoilt, seed=seed)["auc"] for seed in range(args.eval_seeds)]
        rows.append([f"real vs real, second set {name}", mean_and_range(aucs)])
        print(rows[-1], flush=True)
    rows += diagnosis(model, first, args.eval_seeds)
    report("quality_calibration", ["C2ST of", "AUC (or ratio)"], rows,
           {"n": args.n, "eval_seeds": args.eval_seeds, "budget": args.budget})
