"""`make demo`: train a short 3D GAN on real brain MRI and show what it learned.

The MNI152 T1 template that nilearn ships is split into hemispheres: the GAN
trains on the left one (patches centred in the brain mask), the right one is
held out for the evaluation numbers. Everything goes through the `medgan`
commands a user would type; outputs land in demo/out/, the figure in
demo/out/figure.png (the README shows a copy of one run's figure, docs/demo_figure.png,
so the demo never rewrites a tracked file).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_medgan.cli import main as medgan
from napari_medgan.core.checkpoint import read_card
from napari_medgan.core.data.io import read_volume, write_volume
from napari_medgan.core.data.samples import sample_volume
from napari_medgan.core.data.volume import Volume

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FIGURE = OUT / "figure.png"
# 600 CPU seconds of one thread where the CPU computes bf16 (the quality bench's
# 2,880-3,019 steps on this project's machine since the critics' input layers fold 2³
# blocks, 2026-12-05), about 1.4x that without bf16 instructions
STEPS = 3000
PATCH = 32


def brain_mask() -> Volume:
    """Brain tissue: where the shipped grey + white matter probability maps exceed 0.5."""
    gm, wm = sample_volume("mni152_gm"), sample_volume("mni152_wm")
    return Volume(((gm.tensor + wm.tensor) > 0.5).float(), gm.affine, "mni152_brain")


def split_hemispheres(volume: Volume) -> tuple[Path, Path]:
    """Left and right halves along the first voxel axis (x, left-right in MNI space)."""
    name = volume.name
    half = volume.spatial_shape[0] // 2
    paths = []
    for label, start, stop in (("left", 0, half), ("right", half, volume.spatial_shape[0])):
        affine = volume.affine.copy()
        affine[:3, 3] += affine[:3, 0] * start  # the half keeps its place in the world
        part = Volume(volume.tensor[:, start:stop].clone(), affine, f"{name}_{label}")
        paths.append(write_volume(part, OUT / f"{name}_{label}.nii.gz", overwrite=True))
    return paths[0], paths[1]


def run(command: list[str]) -> None:
    print("$ medgan " + " ".join(command), flush=True)
    code = medgan(command)
    if code:
        sys.exit(code)


def mid_slices(tensor: np.ndarray) -> list[np.ndarray]:
    """Three orthogonal mid-slices of a (D, H, W) patch, oriented for display."""
    d, h, w = (s // 2 for s in tensor.shape)
    return [np.rot90(tensor[d]), np.rot90(tensor[:, h]), np.rot90(tensor[:, :, w])]


def real_patches(path: Path, mask_path: Path, count: int, seed: int) -> list[np.ndarray]:
    volume = read_volume(path).tensor[0].numpy()
    mask = read_volume(mask_path).tensor[0].numpy() > 0.5
    rng = np.random.default_rng(seed)
    centres = np.argwhere(
        mask[PATCH // 2 : -PATCH // 2, PATCH // 2 : -PATCH // 2, PATCH // 2 : -PATCH // 2]
    )
    patches = []
    for i, j, k in centres[rng.choice(len(centres), count, replace=False)]:
        patches.append(volume[i : i + PATCH, j : j + PATCH, k : k + PATCH])
    return patches


def figure(real: list[np.ndarray], synthetic: list[np.ndarray], card: dict, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(real)
    fig = plt.figure(figsize=(12, 3 * rows / 2 + 3.2), constrained_layout=True)
    grid = fig.add_gridspec(rows + 2, 7, width_ratios=[1, 1, 1, 0.15, 1, 1, 1])
    vmin = min(float(p.min()) for p in real)
    vmax = max(float(p.max()) for p in real)
    for column, (title, patches) in (
        (0, ("real (held-out hemisphere)", real)),
        (4, ("synthetic (EMA generator)", synthetic)),
    ):
        for row, patch in enumerate(patches):
            for offset, image in enumerate(mid_slices(patch)):
                ax = fig.add_subplot(grid[row, column + offset])
                ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0 and offset == 1:
                    ax.set_title(title)
    ax = fig.add_subplot(grid[rows:, :])
    for name, values in card["loss_history"].items():
        # a long run's card keeps bin means (train.HISTORY_POINTS): place them at their steps
        values = np.asarray(values)
        steps = np.linspace(1, card["step"], len(values))
        smooth = np.convolve(values, np.ones(20) / 20, mode="valid")
        ax.plot(steps, values, alpha=0.25)
        window = 20 * card["step"] / len(values)
        ax.plot(steps[19:], smooth, label=f"{name} (mean of {window:.0f} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax.set_title(
        f"realism: C2ST AUC vs training region {report['c2st_auc_vs_training']:.2f}, "
        f"vs held-out {report['c2st_auc_vs_held_out']:.2f} (two real sets "
        f"{report['c2st_auc_real_vs_real']:.2f}; 0.5 = indistinguishable) · HF power "
        f"{report['hf_power_ratio']:.2f} · MS-SSIM diversity "
        f"{report['ms_ssim_diversity_synthetic']:.2f} (real "
        f"{report['ms_ssim_diversity_held_out']:.2f})",
        fontsize=9,
    )
    fig.suptitle(
        f"napari-medgan demo: {PATCH}³ patches of MNI152 T1, {card['step']} steps, "
        f"three mid-slices per patch"
    )
    fig.savefig(FIGURE, dpi=90)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    t1_left, t1_right = split_hemispheres(sample_volume("mni152_t1"))
    mask_left, mask_right = split_hemispheres(brain_mask())
    checkpoint = OUT / "checkpoint"
    run(
        [
            "train",
            "--task",
            "synthesis",
            "--data",
            str(t1_left),
            "--mask",
            str(mask_left),
            "--patch",
            str(PATCH),
            "--steps",
            str(STEPS),
            "--batch",
            "8",
            "--config",
            str(HERE / "demo_config.yaml"),
            "--out",
            str(checkpoint),
            "--overwrite",
        ]
    )
    run(
        [
            "synthesize",
            str(checkpoint),
            "--n",
            "8",
            "--seed",
            "0",
            "--out",
            str(OUT / "synth"),
            "--overwrite",
        ]
    )
    report_path = OUT / "evaluate.json"
    from napari_medgan.core import api

    report = api.evaluate(checkpoint, [t1_right], n=64, seed=0)
    report_path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    synthetic = [read_volume(p).tensor[0].numpy() for p in sorted((OUT / "synth").glob("*.nii.gz"))]
    figure(
        real_patches(t1_right, mask_right, 4, seed=1), synthetic[:4], read_card(checkpoint), report
    )
    print(
        f"demo finished in {time.perf_counter() - started:.0f} s: {checkpoint}, {OUT / 'synth'}, "
        f"{report_path}, {FIGURE}"
    )


if __name__ == "__main__":
    main()
