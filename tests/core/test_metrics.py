"""Behaviour of the quality and privacy metrics on patches with known answers."""

from __future__ import annotations

import json
import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from napari_medgan.core import metrics
from napari_medgan.core.errors import ConfigError, DataError


def smooth_patches(n: int, p: int = 32, *, seed: int) -> torch.Tensor:
    """Smoothed noise in [-1, 1]: texture with spatial structure, like tissue."""
    gen = torch.Generator().manual_seed(seed)
    x = F.avg_pool3d(torch.randn(n, 1, p, p, p, generator=gen), 5, stride=1, padding=2)
    return (x / x.std() * 0.3).clamp(-1, 1)


def white_patches(n: int, p: int = 32, *, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, p, p, p, generator=gen) * 0.3).clamp(-1, 1)


def noisy(x: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return x + std * torch.randn(x.shape, generator=gen)


# --- per-pair metrics ---------------------------------------------------------------------


def test_ssim_is_one_for_identical_and_drops_with_noise() -> None:
    x = smooth_patches(4, seed=0)
    assert torch.allclose(metrics.ssim3d(x, x), torch.ones(4), atol=1e-6)
    scores = [metrics.ssim3d(x, noisy(x, s)).mean().item() for s in (0.02, 0.1, 0.4)]
    assert 1 > scores[0] > scores[1] > scores[2]


def test_ssim_is_symmetric_and_per_pair() -> None:
    x, y = smooth_patches(3, seed=0), noisy(smooth_patches(3, seed=0), 0.2)
    y[1] = x[1]
    forward, backward = metrics.ssim3d(x, y), metrics.ssim3d(y, x)
    assert forward.shape == (3,)
    assert torch.allclose(forward, backward, atol=1e-6)
    assert forward[1] == pytest.approx(1.0, abs=1e-6) and forward[0] < 0.99


def test_ssim_handles_patches_smaller_than_the_window() -> None:
    x = smooth_patches(2, p=6, seed=0)
    assert torch.allclose(metrics.ssim3d(x, x), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("p", [8, 16, 32])
def test_ms_ssim_range_and_identity(p: int) -> None:
    x, y = smooth_patches(4, p, seed=0), smooth_patches(4, p, seed=1)
    assert torch.allclose(metrics.ms_ssim3d(x, x), torch.ones(4), atol=1e-5)
    unrelated = metrics.ms_ssim3d(x, y)
    similar = metrics.ms_ssim3d(x, noisy(x, 0.05))
    assert ((unrelated >= 0) & (unrelated <= 1)).all()
    assert (similar > unrelated).all() and (similar < 1).all()


def test_ms_ssim_keeps_gradients_for_use_as_a_loss() -> None:
    x = smooth_patches(2, 16, seed=0)
    y = noisy(x, 0.1).requires_grad_()
    metrics.ms_ssim3d(x, y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_psnr_and_mae_known_values() -> None:
    x = torch.zeros(2, 1, 4, 4, 4)
    y = torch.full_like(x, 0.2)
    y[1] = -0.5
    # mse 0.04 -> 10 log10(4 / 0.04) = 20 dB; mse 0.25 -> 10 log10(16) dB
    assert torch.allclose(metrics.psnr(x, y), torch.tensor([20.0, 10 * math.log10(16)]))
    assert torch.allclose(metrics.psnr(x, y, data_range=1.0), torch.tensor([14.0, 6.0]), atol=0.03)
    assert torch.allclose(metrics.mae(x, y), torch.tensor([0.2, 0.5]))
    assert math.isinf(metrics.psnr(x, x)[0].item())


# --- set-level metrics ----------------------------------------------------------------------


def test_mmd_small_for_same_distribution_large_for_different() -> None:
    a, b = smooth_patches(48, seed=0), smooth_patches(48, seed=1)
    same = metrics.mmd(a, b)
    assert abs(same) < 0.01
    assert metrics.mmd(a, white_patches(48, seed=2)) > 10 * max(abs(same), 1e-3)
    assert metrics.mmd(a, b + 0.2) > 10 * max(abs(same), 1e-3)


def test_diversity_identical_set_is_one_random_set_is_low() -> None:
    one = smooth_patches(1, 16, seed=0).expand(6, -1, -1, -1, -1)
    assert metrics.ms_ssim_diversity(one) == pytest.approx(1.0, abs=1e-5)
    varied = smooth_patches(12, 16, seed=0)
    value = metrics.ms_ssim_diversity(varied, pairs=20, seed=3)
    assert value < 0.3
    assert value == metrics.ms_ssim_diversity(varied, pairs=20, seed=3)


def test_memorisation_flags_copies_of_training_patches() -> None:
    training = smooth_patches(200, 16, seed=0)
    held_out = smooth_patches(40, 16, seed=1)
    report = metrics.memorisation_report(training[:30].clone(), held_out, training)
    assert report["fraction_suspiciously_close"] == 1.0 and report["suspicious"]
    assert report["synthetic_nn_distance_min"] == pytest.approx(0.0, abs=1e-6)
    assert report["nn_distance_ratio"] < 0.01
    assert report["real_nn_distance_p05"] <= report["real_nn_distance_median"]


def test_memorisation_quiet_for_independent_samples() -> None:
    training = smooth_patches(200, 16, seed=0)
    report = metrics.memorisation_report(
        smooth_patches(40, 16, seed=2), smooth_patches(40, 16, seed=1), training
    )
    assert report["fraction_suspiciously_close"] < 0.3
    assert report["expected_share"] == 0.05 and not report["suspicious"]
    # one false alarm in 100 by chance: the 99th percentile of Binomial(40, 0.05), over 40
    assert report["suspicious_above"] == scipy.stats.binom.ppf(0.99, 40, 0.05) / 40
    assert 0.9 < report["nn_distance_ratio"] < 1.1
    assert report["synthetic_nn_distance_min"] > 0.1


def test_memorisation_share_has_the_training_regions_own_as_reference() -> None:
    """Held-out patches unlike the training region (shifted here) put honest samples of
    that region above the 0.05 bound too; fresh real patches of it show that level."""
    training = smooth_patches(200, 16, seed=0)
    held_out = smooth_patches(40, 16, seed=1) + 0.2
    fresh = smooth_patches(40, 16, seed=3)
    report = metrics.memorisation_report(smooth_patches(40, 16, seed=2), held_out, training,
                                         fresh)
    assert report["n_training_fresh"] == 40
    assert report["training_region_share"] > 0.5 > report["suspicious_above"]
    assert report["fraction_suspiciously_close"] == pytest.approx(
        report["training_region_share"], abs=0.15)
    alike = metrics.memorisation_report(smooth_patches(40, 16, seed=2),
                                        smooth_patches(40, 16, seed=1), training, fresh)
    assert alike["training_region_share"] < alike["suspicious_above"]  # about 0.05
    assert "training_region_share" not in metrics.memorisation_report(fresh, held_out, training)


def test_nn_distance_chunks_give_the_same_answer() -> None:
    query, reference = torch.randn(7, 20), torch.randn(30, 20)
    full = (torch.cdist(query.double(), reference.double()).min(1).values) / math.sqrt(20)
    assert torch.allclose(metrics._nn_distance(query, reference, chunk=4), full)


def test_synthesis_report_is_json_and_readable() -> None:
    held_out = smooth_patches(16, 16, seed=1)
    report = metrics.synthesis_report(
        smooth_patches(16, 16, seed=2), held_out, smooth_patches(64, 16, seed=0), pairs=16
    )
    json.loads(json.dumps(report, allow_nan=False))
    assert set(report.pop("tissue_w1")) == {"dark", "middle", "bright"}
    assert all(type(v) in (float, int, bool) for v in report.values())
    assert {
        "mmd_synthetic_vs_held_out",
        "mmd_held_out_halves",
        "ms_ssim_diversity_synthetic",
        "ms_ssim_diversity_held_out",
        "memorisation_fraction_suspiciously_close",
        "memorisation_nn_distance_ratio",
        "memorisation_expected_share",
        "memorisation_suspicious_above",
        "hf_power_ratio",
    } <= report.keys()
    assert "memorisation_nn_distance_ratio" not in metrics.synthesis_report(held_out, held_out)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: metrics.ssim3d(x, x[:, :, :8]), "same shape"),
        (lambda x: metrics.psnr(x[0], x[0]), "shape \\(N, C, D, H, W\\)"),
        (lambda x: metrics.mmd(x[:1], x), "at least 2"),
        (lambda x: metrics.ms_ssim_diversity(x[:1]), "at least 2"),
        (lambda x: metrics.mae(x, torch.full_like(x, math.nan)), "NaN"),
        (lambda x: metrics.synthesis_report(x, x[:3]), "at least 4"),
        (lambda x: metrics.memorisation_report(x, x, x[:, :, :8, :8, :8]), "patch shape"),
    ],
)
def test_bad_input_raises_data_error_with_a_sentence(call, message: str) -> None:
    with pytest.raises(DataError, match=message):
        call(smooth_patches(4, 16, seed=0))


def test_zero_pairs_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pairs"):
        metrics.ms_ssim_diversity(smooth_patches(4, 16, seed=0), pairs=0)
