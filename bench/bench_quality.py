"""What the adversarial term buys: each conditional task with and without it, same nets, same data.

The non-adversarial baseline is the same U-Net trained with ``adversarial_weight: 0``
(L1 only for translation and inpainting, Dice + cross-entropy for segmentation). Data:
the shipped MNI152 volumes, left hemisphere to train, right hemisphere held out.
  translation   T1 → grey-matter probability map
  inpainting    T1 with random holes; held-out T1 with a box hole
  segmentation  T1 → tissue labels (1 grey matter, 2 white matter); its critic is opt-in
                (train.segmentation_critic), so its rows are: without (the default), the
                old critic (one-hot truth, no warm-up) and the opt-in critic's defaults

Two more sections have their own modules: ``bench_quality.py synthesis`` (is synthesis
realistic? quality_synthesis.py) and ``bench_quality.py calibration`` (what a C2ST AUC
means: real patches against slightly spoilt ones, quality_calibration.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import quality_calibration
import quality_synthesis
import torch
from _common import halves, report

from napari_medgan.core import api
from napari_medgan.core.data.samples import sample_volume
from napari_medgan.core.data.volume import Volume


def make_data(folder: Path) -> dict[str, tuple[Path, Path]]:
    t1, gm, wm = (sample_volume(n) for n in ("mni152_t1", "mni152_gm", "mni152_wm"))
    labels = torch.where(wm.tensor > 0.5, 2, torch.where(gm.tensor > 0.5, 1, 0)).to(torch.uint8)
    hole = torch.zeros_like(t1.tensor)
    d, h, w = t1.spatial_shape
    hole[:, d * 3 // 4 - 8:d * 3 // 4 + 8, h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8] = 1
    return {
        "t1": halves(t1, folder, "t1_{side}"),
        "gm": halves(gm, folder, "gm_{side}"),
        "labels": halves(Volume(labels, gm.affine), folder, "labels_{side}"),
        "hole": halves(Volume(hole, t1.affine), folder, "hole_{side}"),
    }


# (row label, train config fields) per task
VARIANTS = {
    "translation": (("without (L1 only)", {"adversarial_weight": 0.0}),
                    ("with adversarial", {"adversarial_weight": 1.0})),
    "segmentation": (
        ("without critic (default)", {}),
        ("old critic: one-hot truth, no warm-up",
         {"segmentation_critic": True, "critic_real": "onehot", "critic_warmup": 0.0}),
        ("opt-in critic: scaled truth, warm-up 0.25", {"segmentation_critic": True}),
    ),
}
VARIANTS["inpainting"] = VARIANTS["translation"]


def run(task: str, train: dict, seed: int, data: dict, args, folder: Path) -> dict:
    config = api.Config()
    config.task = task
    config.data.paths = [str(data["t1"][0])]
    truth: dict = {}
    if task == "translation":
        config.data.targets = [str(data["gm"][0])]
        config.data.target_modality = "mr"
        truth = {"target": [data["gm"][1]]}
    elif task == "segmentation":
        config.data.labels = [str(data["labels"][0])]
        truth = {"labels": [data["labels"][1]]}
    else:
        truth = {"mask": [data["hole"][1]]}
    config.model.patch_size = args.patch
    config.model.unet_channels = (8, 16, 32, 64)
    config.model.patchgan_channels = 16
    config.train.steps, config.train.batch_size = args.steps, args.batch
    config.train.device = args.device
    config.train.seed = seed
    for key, value in train.items():
        setattr(config.train, key, value)
    config.train.preview_every = config.train.checkpoint_every = 10**9
    out = folder / "run"
    torch.manual_seed(seed)
    started = time.perf_counter()
    for _ in api.train(config, out, overwrite=True):
        pass
    seconds = time.perf_counter() - started
    scores = api.evaluate(out, [data["t1"][1]], **truth)["mean"]
    return {"seconds": seconds, **scores}


def main() -> None:
    if sys.argv[1:2] == ["synthesis"]:  # the synthesis section: see quality_synthesis.py
        quality_synthesis.main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["calibration"]:  # how to read a C2ST AUC: see quality_calibration.py
        quality_calibration.main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tasks", nargs="+", default=["translation", "inpainting", "segmentation"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    headline = {"translation": ["mae", "psnr", "ssim"], "inpainting": ["mae_hole", "psnr_hole"],
                "segmentation": ["dice_1", "dice_2", "hd95_2"]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_data(folder)
        for task in args.tasks:
            for label, train in VARIANTS[task]:
                for seed in args.seeds:
                    scores = run(task, train, seed, data, args, folder)
                    metrics = "  ".join(f"{k} {scores[k]:.4g}" for k in headline[task]
                                        if k in scores)
                    rows.append([task, label, seed, metrics, f"{scores['seconds']:.0f}"])
    report("quality", ["task", "training", "seed", "held-out metrics", "train s"], rows,
           {"patch": args.patch, "steps": args.steps, "batch": args.batch, "device": args.device})


if __name__ == "__main__":
    main()
