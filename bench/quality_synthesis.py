"""Synthesis quality at equal CPU time: old defaults, each data-efficient switch, new defaults.

Every variant starts from the demo's settings (demo/demo_config.yaml, patch 32³, batch 8,
patches centred in the tissue mask) and trains until the process has used the same CPU
time (``--budget``, CPU seconds of one torch thread; 600 is about the demo's 5 minutes on
2 cores). CPU time, not wall time, so that other jobs on the machine don't change a
variant's budget. Then
``api.evaluate`` on the held-out half (C2ST AUC against the training region and the held-out
half with its real-vs-real yardstick, HF power ratio, memorisation share) — the numbers a
user gets. Checkpoints are kept under bench/results/quality/ so a table can be redone
without retraining (``--retrain`` to start over).

Data (all shipped): the MNI152 T1 (train on the left hemisphere, hold out the right; tissue
mask = grey + white matter > 0.5, labels 1 grey / 2 white matter) and the CT head atlas
(same split; this atlas holds the brain only, air set to 0 HU: tissue mask = HU > 0,
labels 1 CSF-like (0–25 HU) / 2 parenchyma (≥ 25 HU)).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, halves

from napari_medgan.core import api
from napari_medgan.core.data.samples import sample_volume
from napari_medgan.core.data.volume import Volume
from napari_medgan.core.realism import C2ST_EPOCHS

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "demo" / "demo_config.yaml"
FOLDER = RESULTS / "quality"
CT_TISSUE_HU, CT_PARENCHYMA_HU = 0.0, 25.0  # the atlas is brain only, air set to 0

# the demo's settings before the local critic joined them (2026-12-04): nearest
# upsampling, D alone; the variants measured before then start from these
ONE_CRITIC = {"model.upsample": "resize", "model.local_d_channels": 0}

# the sizes of ModelConfig's defaults until 2026-12-05 (since then the demo's)
EARLIER_PACKAGE_MODEL = {"model.latent_dim": 128, "model.g_channels": 32,
                         "model.d_channels": 32, "model.max_channels": 256}

# config overrides, "section.field": value, on top of the demo's settings
VARIANTS: dict[str, dict[str, Any]] = {
    **{name: {**ONE_CRITIC, **overrides} for name, overrides in {
        # the defaults before this bench made R1 the default (train.r1_weight None → 1)
        "no R1 (the old default)": {"train.r1_weight": 0.0},
        "diffaug translation+cutout": {"train.diff_augment": ["translation", "cutout"]},
        "diffaug translation+cutout+intensity": {
            "train.diff_augment": ["translation", "cutout", "intensity"]
        },
        "R1 (weight 1)": {"train.r1_weight": 1.0},
        "residual G and D": {"model.g_residual": True, "model.d_residual": True},
        "R1 (weight 0.1)": {"train.r1_weight": 0.1},
        "R1 + diffaug translation+cutout": {"train.r1_weight": 1.0,
                                            "train.diff_augment": ["translation", "cutout"]},
        "R1, G width 16": {"train.r1_weight": 1.0, "model.g_channels": 16},
        "R1, TTUR (lr_g 1e-4, lr_d 4e-4)": {"train.r1_weight": 1.0, "train.lr_g": 1e-4,
                                             "train.lr_d": 4e-4},
        "R1, EMA decay 0.99": {"train.r1_weight": 1.0, "train.ema_decay": 0.99},
        "R1, trilinear upsampling": {"train.r1_weight": 1.0, "model.upsample": "trilinear"},
        "R1, no EMA": {"train.r1_weight": 1.0, "train.ema_decay": 0.0},
        "R1, lr 1e-3": {"train.r1_weight": 1.0, "train.lr_g": 1e-3, "train.lr_d": 1e-3},
        "R1, lr 1e-3, betas (0, 0.99)": {"train.r1_weight": 1.0, "train.lr_g": 1e-3,
                                         "train.lr_d": 1e-3, "train.betas": (0.0, 0.99)},
        # CT: the default window (-1000, 1000 HU) leaves brain tissue 4 % of the range
        "R1, brain CT window (0, 80 HU)": {"train.r1_weight": 1.0,
                                           "data.ct_window": (0.0, 80.0)},
        "no R1, brain CT window (0, 80 HU)": {"train.r1_weight": 0.0,
                                              "data.ct_window": (0.0, 80.0)},
        "R1, two D steps per G step": {"train.r1_weight": 1.0, "train.n_critic": 2},
        "lazy R1 (every 4th D step)": {"train.r1_weight": 1.0, "train.r1_every": 4},
        "R1, D without BatchNorm": {"train.r1_weight": 1.0, "model.d_norm": "none"},
        "hinge, spectral-norm D without BatchNorm": {
            "train.r1_weight": 0.0, "train.loss": "hinge", "model.d_norm": "none",
            "model.spectral_norm": True},
        # a local critic of one level (16³ neighbourhoods), the first kind measured
        "R1, local critic (width 8, 16³)": {
            "train.r1_weight": 1.0, "model.local_d_channels": 8, "model.local_d_layers": 1},
        "R1, local critic (width 16, 16³)": {
            "train.r1_weight": 1.0, "model.local_d_channels": 16, "model.local_d_layers": 1},
        "R1, trilinear, local critic (width 8, 16³)": {
            "train.r1_weight": 1.0, "model.upsample": "trilinear", "model.local_d_channels": 8,
            "model.local_d_layers": 1},
        # the previous defaults drawing label maps too: its pairs are scored by TSTR
        "R1 (the previous default), image + labels": {"labels": True},
    }.items()},
    # the demo's settings now: R1, trilinear upsampling, a local critic of width 16 and two
    # levels (34³ neighbourhoods); the demo's first local critic had one level (16³).
    # Since 2026-12-05 a step runs G once and in bf16 where the CPU computes it; the
    # checkpoints kept from before (float32, G twice a step) are not these variants' own.
    # Since the second change of 2026-12-05 the critics learn at twice G's rate (lr_d 4e-4)
    "R1, trilinear, local critic (width 16, 34³) — the demo's": {},
    "the demo's, lr_d 2e-4 (G's rate, before 2026-12-05)": {"train.lr_d": 2e-4},
    "the demo's, image + labels": {"labels": True},
    "the demo's, batch 4": {"train.batch_size": 4},
    "the demo's, two D steps per G step": {"train.n_critic": 2},
    "the demo's, lr 5e-4": {"train.lr_g": 5e-4, "train.lr_d": 5e-4},
    "the demo's, no R1": {"train.r1_weight": 0.0},
    "the demo's, float32 (train.amp: false)": {"train.amp": False},
    "the demo's, lazy R1 (every 4th D step)": {"train.r1_every": 4},
    "the demo's, no R1, two D steps per G step": {"train.r1_weight": 0.0, "train.n_critic": 2},
    "the demo's, brain CT window (0, 80 HU)": {"data.ct_window": (0.0, 80.0)},
    "R1, trilinear, local critic (width 16, 16³)": {"model.local_d_layers": 1},
    "R1, trilinear, local critic (width 24, 16³)": {"model.local_d_channels": 24,
                                                     "model.local_d_layers": 1},
    "R1, trilinear, local critic (width 16, 70³)": {"model.local_d_layers": 3},
    # the package's own model until 2026-12-05: was the demo's setting the better default?
    "the package's model until 2026-12-05, transpose upsampling, D alone": {
        **EARLIER_PACKAGE_MODEL, "model.upsample": "transpose", "model.local_d_channels": 0},
    "the package's model until 2026-12-05, trilinear, local critic (width 16, 16³)": {
        **EARLIER_PACKAGE_MODEL, "model.local_d_layers": 1},
}


def make_dataset(name: str, folder: Path) -> dict[str, tuple[Path, Path]]:
    """Image, tissue mask and label halves of one shipped volume, written once."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "mni152":
        image, gm, wm = (sample_volume(n) for n in ("mni152_t1", "mni152_gm", "mni152_wm"))
        mask = (gm.tensor + wm.tensor) > 0.5
        labels = torch.where(wm.tensor > 0.5, 2, torch.where(gm.tensor > 0.5, 1, 0))
    elif name == "ct_head":
        image = sample_volume("ct_head")
        mask = image.tensor > CT_TISSUE_HU
        labels = torch.where(image.tensor >= CT_PARENCHYMA_HU, 2, mask.long())
    else:
        raise SystemExit(f"unknown dataset {name!r}; use mni152 or ct_head")
    return {
        "image": halves(image, folder, "{side}"),
        "mask": halves(Volume(mask.float(), image.affine), folder, "{side}_mask"),
        "labels": halves(Volume(labels.to(torch.uint8), image.affine), folder, "{side}_labels"),
    }


def variant_config(overrides: dict[str, Any], data: dict, patch: int, batch: int) -> api.Config:
    config = api.load_config(DEMO_CONFIG)
    config.data.paths = [str(data["image"][0])]
    config.data.masks = [str(data["mask"][0])]
    config.model.patch_size = patch
    config.train.batch_size = batch
    config.train.steps = 10**6  # the CPU budget ends the run
    config.train.preview_every = config.train.checkpoint_every = 10**9
    for key, value in overrides.items():
        if key == "labels":  # a generator of (image, label map) pairs
            config.data.labels = [str(data["labels"][0])]
            continue
        section, field = key.split(".")
        setattr(getattr(config, section), field, value)
    config.validate()
    return config


def train_on_budget(config: api.Config, out: Path, budget_cpu_s: float) -> dict[str, float]:
    """Train until this process has used ``budget_cpu_s`` CPU seconds; a stop saves the model."""
    started_cpu, started = time.process_time(), time.perf_counter()
    steps = 0
    for event in api.train(config, out, overwrite=True,
                           stop=lambda: time.process_time() - started_cpu > budget_cpu_s):
        steps = max(steps, getattr(event, "step", 0) or 0)
    return {"steps": steps, "cpu_s": time.process_time() - started_cpu,
            "wall_s": time.perf_counter() - started}


def trained_model(dataset: str, variant: str, budget: float, args) -> tuple[Path, dict, dict]:
    """The variant's checkpoint, trained now unless a finished one is kept (``--retrain``)."""
    data = make_dataset(dataset, FOLDER / "data" / dataset)
    seed = getattr(args, "train_seed", 0)
    tag = f"{dataset}-{variant}-{budget:.0f}{f'-seed{seed}' if seed else ''}"
    tag = tag.replace(" ", "_").replace("+", "_")
    out = FOLDER / tag
    done = out / "bench.json"
    if done.exists() and not args.retrain:
        return out, json.loads(done.read_text()), data
    torch.manual_seed(seed)
    config = variant_config(VARIANTS[variant], data, args.patch, args.batch)
    config.train.seed = seed
    trained = train_on_budget(config, out, budget)
    done.write_text(json.dumps(trained))
    print(f"trained {tag}: {trained}", flush=True)
    return out, trained, data


def run_variant(dataset: str, variant: str, budget: float, args) -> list[dict[str, Any]]:
    """The variant trained, and evaluated once per evaluation seed (``--eval-seeds``): the
    C2ST's own spread, which the seed (patches drawn, classifier initialised) and even the
    thread count move by several hundredths. Results are kept beside the checkpoint."""
    out, trained, data = trained_model(dataset, variant, budget, args)
    return [evaluated(out, trained, data, dataset, variant, budget, args, seed)
            for seed in range(args.eval_seeds)]


def evaluated(out: Path, trained: dict, data: dict, dataset: str, variant: str, budget: float,
              args, seed: int) -> dict[str, Any]:
    # named by the classifier's epochs too: a result of another C2ST is not this one's
    name = f"evaluate-n{args.n}-e{C2ST_EPOCHS}{'-thorough' if args.thorough else ''}"
    kept = out / (f"{name}.json" if seed == 0 else f"{name}-seed{seed}.json")
    if kept.exists() and not args.retrain:
        return json.loads(kept.read_text())
    started = time.perf_counter()
    # the training region: the card's files and masks, as a user's evaluate finds them;
    # a pairs model is also scored by TSTR (train on synthetic, test on real)
    pairs = "labels" in VARIANTS[variant]
    report = api.evaluate(out, [data["image"][1]], n=args.n, seed=seed, thorough=args.thorough,
                          tstr=pairs, labels=[data["labels"][1]] if pairs else None)
    result = {"dataset": dataset, "variant": variant, "budget_cpu_s": budget, **trained,
              "evaluate_s": time.perf_counter() - started, "report": report}
    kept.write_text(json.dumps(result, indent=2))
    return result


def mean_and_range(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{sum(values) / len(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def row(results: list[dict[str, Any]]) -> list:
    """One variant's line: the C2ST and TSTR as the mean over evaluation seeds (and their
    range), the other numbers of the first seed."""
    first = results[0]
    r = first["report"]

    def num(key: str, fmt: str = ".2f") -> str:
        value = r.get(key)
        return "–" if value is None else format(value, fmt)

    def spread(key: str) -> str:
        return mean_and_range([result["report"][key] for result in results])

    return [first["dataset"], first["variant"], f"{first['budget_cpu_s']:.0f}",
            first["steps"], spread("c2st_auc_vs_training"), spread("c2st_auc_vs_held_out"),
            spread("c2st_auc_real_vs_real"), num("hf_power_ratio"),
            num("memorisation_fraction_suspiciously_close", ".3f"),
            num("memorisation_training_region_share", ".3f"),
            num("mmd_synthetic_vs_held_out", ".3f"),
            tstr([result["report"]["tstr"] for result in results if "tstr" in result["report"]])]


def tstr(reports: list[dict]) -> str:
    """Held-out Dice of segmenters trained on synthetic / real / both kinds of pairs."""
    if not reports:
        return "–"
    return " / ".join(mean_and_range([report[f"dice_{pool}"] for report in reports])
                      for pool in ("synthetic", "real", "real_plus_synthetic"))


HEADER = ["data", "variant", "CPU s", "steps", "C2ST vs train", "C2ST vs held-out",
          "C2ST real-real", "HF power", "memorised", "memorised, training region's own",
          "MMD", "TSTR Dice syn / real / both"]


def main(argv: list[str]) -> None:
    import argparse

    from _common import report

    parser = argparse.ArgumentParser(prog="bench_quality.py synthesis", description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["mni152"], choices=["mni152", "ct_head"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--budget", type=float, nargs="+", default=[600.0],
                        help="CPU seconds per variant (the demo's budget is about 600)")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n", type=int, default=64, help="patches per set in evaluate")
    parser.add_argument("--thorough", action="store_true", help="evaluate --thorough")
    parser.add_argument("--eval-seeds", type=int, default=3,
                        help="evaluations per variant (seeds 0, 1, ...): the C2ST's spread")
    parser.add_argument("--train-seed", type=int, default=0,
                        help="the training run's seed (nets, noise, patches): its own spread")
    parser.add_argument("--train-only", action="store_true", help="train, don't evaluate")
    parser.add_argument("--retrain", action="store_true", help="ignore kept checkpoints")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: CPU time stays honest when other jobs share "
                             "the cores, as no thread waits at a barrier for a busy one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for dataset in args.datasets:
        for budget in args.budget:
            for variant in args.variants:
                if args.train_only:
                    trained_model(dataset, variant, budget, args)
                    continue
                results.append(run_variant(dataset, variant, budget, args))
                print(row(results[-1]), flush=True)
    if results:
        report("quality_synthesis", HEADER, [row(r) for r in results],
               {"patch": args.patch, "batch": args.batch, "n": args.n,
                "thorough": args.thorough, "eval_seeds": args.eval_seeds,
                "reports": [[r["report"] for r in seeds] for seeds in results]})
