"""Whole-volume task metrics (translation, segmentation, anomaly detection) on known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_medgan.core import metrics
from napari_medgan.core.errors import ConfigError, DataError


def smooth_volume(shape: tuple[int, ...] = (24, 24, 24), *, seed: int = 0) -> torch.Tensor:
    """Smoothed noise scaled to roughly HU: tissue-like texture around 0 ± 300."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, *shape, generator=gen)
    x = F.avg_pool3d(x, 5, stride=1, padding=2)[0, 0]
    return x / x.std() * 300


def cube(lo: tuple[int, int, int], side: int = 10, shape=(30, 30, 30), label: int = 1):
    vol = torch.zeros(shape, dtype=torch.int64)
    z, y, x = lo
    vol[z : z + side, y : y + side, x : x + side] = label
    return vol


# --- image similarity ---------------------------------------------------------------------


def test_identical_volumes_are_perfect() -> None:
    x = smooth_volume()
    out = metrics.image_similarity(x, x.clone(), data_range=4000.0)
    assert set(out) == {"psnr", "ssim", "mae"}
    assert out["psnr"] == math.inf
    assert out["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["mae"] == 0.0
    mask = torch.zeros(x.shape, dtype=torch.bool)
    mask[5:15, 5:15, 5:15] = True
    masked = metrics.image_similarity(x, x, data_range=4000.0, mask=mask)
    assert masked == {"psnr": math.inf, "ssim": pytest.approx(1.0, abs=1e-6), "mae": 0.0}


def test_unmasked_values_match_the_patch_metrics() -> None:
    x, y = smooth_volume(seed=0), smooth_volume(seed=1)
    out = metrics.image_similarity(x, y, data_range=4000.0)
    batch = (x[None, None], y[None, None])
    assert out["psnr"] == pytest.approx(float(metrics.psnr(*batch, data_range=4000.0)), rel=1e-5)
    assert out["ssim"] == pytest.approx(float(metrics.ssim3d(*batch, data_range=4000.0)), abs=1e-6)
    assert out["mae"] == pytest.approx(float((x - y).abs().mean()), rel=1e-5)
    # MAE is in the volumes' own units: a constant 50 HU offset gives MAE 50
    shifted = metrics.image_similarity(x, x + 50, data_range=4000.0)
    assert shifted["mae"] == pytest.approx(50.0, rel=1e-5)
    assert shifted["psnr"] == pytest.approx(10 * math.log10(4000.0**2 / 2500), rel=1e-5)


def test_channel_volumes_are_accepted() -> None:
    x = torch.stack([smooth_volume(seed=0), smooth_volume(seed=1)])
    out = metrics.image_similarity(x, x + 10, data_range=4000.0)
    assert out["mae"] == pytest.approx(10.0, rel=1e-5) and out["ssim"] < 1


def test_masked_metrics_ignore_errors_outside_and_see_errors_inside() -> None:
    x = smooth_volume((28, 28, 28))
    mask = torch.zeros(x.shape, dtype=torch.bool)
    mask[8:20, 8:20, 8:20] = True
    # corrupt everything at least 3 voxels (the SSIM window's half-width) away from the mask
    far = F.max_pool3d(mask[None, None].float(), 7, stride=1, padding=3)[0, 0] == 0
    corrupt_outside = x.clone()
    corrupt_outside[far] += 500 * torch.randn(
        int(far.sum()), generator=torch.Generator().manual_seed(3)
    )
    clean = metrics.image_similarity(x, x, data_range=4000.0, mask=mask)
    outside = metrics.image_similarity(corrupt_outside, x, data_range=4000.0, mask=mask)
    assert outside == clean
    assert metrics.image_similarity(corrupt_outside, x, data_range=4000.0)["mae"] > 10

    corrupt_inside = x.clone()
    corrupt_inside[12, 12, 12] += 800
    inside = metrics.image_similarity(corrupt_inside, x, data_range=4000.0, mask=mask)
    assert inside["mae"] == pytest.approx(800 / mask.sum().item(), rel=1e-4)
    assert inside["psnr"] < 100 and inside["ssim"] < 1


def test_masked_mae_averages_only_the_masked_voxels() -> None:
    x = torch.zeros(12, 12, 12)
    y = x.clone()
    y[:6] = 100.0
    mask = torch.zeros(x.shape, dtype=torch.bool)
    mask[4:8] = True  # half of the masked slabs differ by 100
    out = metrics.image_similarity(y, x, data_range=1000.0, mask=mask)
    assert out["mae"] == pytest.approx(50.0)
    assert out["psnr"] == pytest.approx(10 * math.log10(1000.0**2 / 5000))


# --- segmentation -------------------------------------------------------------------------


def test_dice_known_values() -> None:
    a, b = cube((5, 5, 5)), cube((10, 5, 5))  # shifted by half a side: |A ∩ B| = |A| / 2
    assert metrics.dice_per_label(a, b, [1]) == {1: pytest.approx(0.5)}
    half = a.clone()
    half[10:] = 0  # B is the half of A: 2 · 500 / (1000 + 500)
    a[20:25, 20:25, 20:25] = 2  # label 2 only in the prediction
    assert metrics.dice_per_label(a, half, [1, 2, 3]) == {
        1: pytest.approx(2 / 3),
        2: 0.0,
        3: 1.0,  # absent from both
    }
    assert metrics.dice_per_label(a, a, [1, 2]) == {1: 1.0, 2: 1.0}


@pytest.mark.parametrize(
    ("shift", "spacing", "expected"),
    [
        ((3, 0, 0), (2.0, 1.0, 1.0), 6.0),
        ((0, 0, 3), (2.0, 1.0, 1.0), 3.0),
        ((0, 2, 0), (1.0, 1.5, 1.0), 3.0),
    ],
)
def test_hd95_of_a_shifted_cube(shift, spacing, expected: float) -> None:
    a = cube((5, 5, 5))
    b = cube(tuple(5 + s for s in shift))
    out = metrics.hd95_per_label(a, b, [1], spacing=spacing)
    assert out[1] == pytest.approx(expected)
    assert metrics.hd95_per_label(b, a, [1], spacing=spacing)[1] == pytest.approx(expected)


def test_hd95_identical_absent_and_one_sided() -> None:
    a = cube((5, 5, 5))
    a[20:25, 20:25, 20:25] = 2
    b = a.clone()
    b[b == 2] = 0
    out = metrics.hd95_per_label(a, b, [1, 2, 7], spacing=(0.7, 0.7, 2.5))
    assert out == {1: 0.0, 2: math.inf, 7: 0.0}


def test_hd95_subsamples_large_surfaces_reproducibly(monkeypatch) -> None:
    monkeypatch.setattr(metrics, "HD95_MAX_SURFACE_POINTS", 300)
    a, b = cube((5, 5, 5), side=14), cube((8, 5, 5), side=14)  # 1016 surface voxels each
    first = metrics.hd95_per_label(a, b, [1])[1]
    assert first == metrics.hd95_per_label(a, b, [1])[1]
    assert 2.0 <= first <= 4.0  # exact answer is 3
    assert metrics.hd95_per_label(a, a.clone(), [1], spacing=(0.7, 0.4, 2.1)) == {1: 0.0}


# --- anomaly detection --------------------------------------------------------------------


def slow_auroc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    pos, neg = scores[truth.bool()].tolist(), scores[~truth.bool()].tolist()
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def slow_average_precision(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Σ (R_n − R_{n−1}) P_n over distinct thresholds, from explicit confusion counts."""
    truth = truth.bool()
    ap, last_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= t
        tp = int((predicted & truth).sum())
        precision, recall = tp / int(predicted.sum()), tp / int(truth.sum())
        ap += (recall - last_recall) * precision
        last_recall = recall
    return ap


def test_auroc_extremes_and_ties() -> None:
    truth = torch.tensor([0, 0, 0, 1, 1])
    assert metrics.auroc(torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]), truth) == 1.0
    assert metrics.auroc(torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1]), truth) == 0.0
    assert metrics.auroc(torch.ones(5), truth) == 0.5
    assert metrics.auprc(torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]), truth) == 1.0
    assert metrics.auprc(torch.ones(5), truth) == pytest.approx(2 / 5)  # the prevalence


def test_auroc_of_random_scores_is_about_a_half() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(20, 20, 20, generator=gen)
    truth = torch.rand(20, 20, 20, generator=gen) < 0.2
    assert metrics.auroc(scores, truth) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_auprc_match_slow_references(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    truth = (torch.rand(80, generator=gen) < 0.3).long()
    truth[0], truth[1] = 0, 1
    # coarse scores so that many ties occur, shifted up for positives
    scores = torch.randint(0, 8, (80,), generator=gen).float() + 2 * truth
    assert metrics.auroc(scores, truth) == pytest.approx(slow_auroc(scores, truth), abs=1e-12)
    expected = slow_average_precision(scores, truth)
    assert metrics.auprc(scores, truth) == pytest.approx(expected, abs=1e-12)
    assert metrics.auprc(scores.reshape(4, 4, 5), truth.reshape(4, 4, 5).bool()) == pytest.approx(
        expected, abs=1e-12
    )


def test_best_threshold_dice_finds_a_planted_blob() -> None:
    gen = torch.Generator().manual_seed(0)
    truth = torch.zeros(32, 32, 32, dtype=torch.bool)
    truth[8:16, 10:20, 12:22] = True  # ~2.4 % of the voxels
    scores = torch.randn(truth.shape, generator=gen) * 0.2 + truth.float()
    dice, threshold = metrics.best_threshold_dice(scores, truth)
    assert dice > 0.85
    assert 0.2 < threshold < 0.9
    manual = scores >= threshold
    assert dice == pytest.approx(2 * (manual & truth).sum().item() / (manual.sum() + truth.sum()))
    exact, exact_threshold = metrics.best_threshold_dice(scores, truth, n_thresholds=None)
    assert exact > 0.95 and exact >= dice
    manual = scores >= exact_threshold
    assert exact == pytest.approx(2 * (manual & truth).sum().item() / (manual.sum() + truth.sum()))
    assert metrics.best_threshold_dice(truth.float(), truth) == (1.0, 1.0)


# --- bad input ----------------------------------------------------------------------------

VOL = torch.zeros(8, 8, 8)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.image_similarity(VOL, torch.zeros(8, 8, 9), data_range=1.0), "same shape"),
        (
            lambda: metrics.image_similarity(VOL, VOL.clone().fill_(math.nan), data_range=1.0),
            "NaN",
        ),
        (
            lambda: metrics.image_similarity(
                VOL, VOL, data_range=1.0, mask=torch.zeros(8, 8, 8, dtype=torch.bool)
            ),
            "mask is empty",
        ),
        (
            lambda: metrics.image_similarity(
                VOL, VOL, data_range=1.0, mask=torch.ones(8, 8, 4, dtype=torch.bool)
            ),
            "spatial shape",
        ),
        (lambda: metrics.image_similarity(VOL[0], VOL[0], data_range=1.0), r"\(D, H, W\)"),
        (lambda: metrics.dice_per_label(cube((0, 0, 0)), cube((0, 0, 0))[:5], [1]), "same shape"),
        (lambda: metrics.hd95_per_label(VOL, VOL.clone().fill_(math.nan), [1]), "NaN"),
        (lambda: metrics.auroc(torch.rand(10), torch.zeros(10)), "no positive"),
        (lambda: metrics.auroc(torch.rand(10), torch.ones(10)), "positive everywhere"),
        (lambda: metrics.auroc(torch.rand(10), torch.ones(9)), "same shape"),
        (lambda: metrics.auprc(torch.full((4,), math.nan), torch.ones(4)), "NaN"),
        (lambda: metrics.auprc(torch.rand(4), torch.tensor([0, 1, 2, 1])), "binary"),
        (lambda: metrics.best_threshold_dice(torch.rand(10), torch.zeros(10)), "no positive"),
    ],
)
def test_bad_input_raises_data_error_with_a_sentence(call, message: str) -> None:
    with pytest.raises(DataError, match=message):
        call()


def test_bad_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="spacing"):
        metrics.hd95_per_label(cube((0, 0, 0)), cube((0, 0, 0)), [1], spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match="data range"):
        metrics.image_similarity(VOL, VOL, data_range=0.0)
    with pytest.raises(ConfigError, match="labels"):
        metrics.dice_per_label(cube((0, 0, 0)), cube((0, 0, 0)), [])
