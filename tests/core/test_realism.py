"""The classifier two-sample test finds known faults in real brain patches, and only those."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_medgan.core import metrics
from napari_medgan.core.data.normalize import fit_normalization, normalize
from napari_medgan.core.data.patches import DevicePatchSampler
from napari_medgan.core.data.samples import sample_volume
from napari_medgan.core.realism import c2st

PATCH, N = 16, 48  # small patches keep each test a few seconds on 2 cores
CHECKERBOARD_AMPLITUDE = 0.1  # ±0.1 in [-1, 1]: 5 % of the intensity range


@pytest.fixture(scope="module")
def patches():
    """3N foreground-centred patches of the MNI152 T1, normalised as a model sees them."""
    volume = sample_volume("mni152_t1").tensor
    image = normalize(fit_normalization([volume], "mr"), volume)
    sampler = DevicePatchSampler([image], PATCH, 3 * N, device=torch.device("cpu"), seed=0,
                                 masks=[image[:1] > -0.9])
    return sampler.next_batch()


def blurred(x, sigma=1.0):
    """Gaussian blur of each patch (separable, replicate padding)."""
    r = torch.arange(-3, 4, dtype=x.dtype)
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.pad(x, (3,) * 6, mode="replicate")
    for shape in ((7, 1, 1), (1, 7, 1), (1, 1, 7)):
        x = F.conv3d(x, g.view(1, 1, *shape))
    return x


def checkerboard(x, amplitude=CHECKERBOARD_AMPLITUDE):
    """A 3D checkerboard of period 4 voxels (cells of 2³), as transposed convolutions leave."""
    i = torch.arange(x.shape[-1])
    cells = (i.view(-1, 1, 1) // 2 + i.view(1, -1, 1) // 2 + i.view(1, 1, -1) // 2) % 2
    return (x + amplitude * (cells * 2 - 1)).clamp(-1, 1)


def test_c2st_tells_real_from_blurred(patches):
    real = patches[:N]
    assert c2st(real, blurred(real))["auc"] > 0.95


def test_c2st_tells_real_from_a_faint_checkerboard(patches):
    real = patches[:N]
    result = c2st(real, checkerboard(real))
    assert result["auc"] > 0.95 and result["p_value"] < 1e-6


def test_c2st_cannot_tell_two_real_sets_apart_and_repeats_itself(patches):
    first = c2st(patches[:N], patches[N:2 * N], seed=3)
    assert first["auc"] < 0.65 and first["p_value"] > 0.005  # AUC 0.65 is p ≈ 0.006 here
    assert c2st(patches[:N], patches[N:2 * N], seed=3) == first


# --- the fidelity numbers on the same faults --------------------------------------------------


def test_hf_power_ratio_below_one_for_blur_above_for_checkerboard_and_noise(patches):
    real = patches[:N]
    noise = real + 0.1 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    assert metrics.hf_power_ratio(real, real) == pytest.approx(1.0)
    assert metrics.hf_power_ratio(blurred(real), real) < 0.5
    assert metrics.hf_power_ratio(checkerboard(real), real) > 2
    assert metrics.hf_power_ratio(noise, real) > 1.5


def test_tissue_w1_grows_with_an_intensity_shift(patches):
    real, other_real = patches[:N], patches[N:2 * N]
    same = metrics.tissue_w1(other_real, real)
    # the foreground brightened by 0.1 (background left as it is, so no voxel changes class)
    brighter = torch.where(other_real > -0.9, (other_real + 0.1).clamp(max=1), other_real)
    shifted = metrics.tissue_w1(brighter, real)
    assert set(same) == {"dark", "middle", "bright"}
    # the dark third sits at the foreground threshold, where two real sets already differ
    assert all(shifted[t] > same[t] + 0.02 for t in ("middle", "bright"))
    assert metrics.tissue_w1(real, real) == {"dark": 0.0, "middle": 0.0, "bright": 0.0}
