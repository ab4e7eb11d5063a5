"""Both patch samplers draw from the same distribution, in bounds, repeatably.

Every voxel of the test volumes holds a unique code (volume offset + linear position,
exact in float32), so each patch tells which volume and corner it came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medgan.core.data.patches import (
    DevicePatchSampler,
    PatchSampler,
    QueuePatchSampler,
    make_patch_sampler,
)
from napari_medgan.core.errors import ConfigError, DataError

SHAPES = [(14, 17, 12), (12, 13, 16), (16, 12, 13)]
P, BATCH, DRAWS = 6, 50, 60  # 3000 patches per sampler
CODE_STEP = 4096  # codes of volume n start at n * CODE_STEP


def _volumes() -> list[torch.Tensor]:
    """Two channels: the code, and the code + 0.5 (to check channels stay aligned)."""
    out = []
    for n, shape in enumerate(SHAPES):
        code = n * CODE_STEP + torch.arange(int(np.prod(shape)), dtype=torch.float32)
        code = code.reshape(1, *shape)
        out.append(torch.cat([code, code + 0.5]))
    return out


def _masks() -> list[torch.Tensor]:
    """A ball per volume, off-centre, so the mask really restricts the corners."""
    masks = []
    for shape in SHAPES:
        grid = torch.stack(torch.meshgrid(*(torch.arange(s) for s in shape), indexing="ij"))
        centre = torch.tensor([s * 0.6 for s in shape])[:, None, None, None]
        masks.append((((grid - centre) ** 2).sum(0) <= 4.0**2)[None])
    return masks


def _make(kind: str, seed: int = 0, masks: list[torch.Tensor] | None = None,
          mask_share: float = 1.0) -> PatchSampler:
    return make_patch_sampler(kind, _volumes(), P, BATCH, affines=[np.eye(4)] * len(SHAPES),
                              device="cpu", seed=seed, masks=masks, mask_share=mask_share)


def _decode(sampler: PatchSampler) -> tuple[np.ndarray, np.ndarray]:
    """Draw DRAWS batches; check each patch is its source's exact block; volume and corner."""
    volumes = _volumes()
    sources, corners = [], []
    for _ in range(DRAWS):
        batch = sampler.next_batch()
        assert batch.shape == (BATCH, 2, P, P, P)
        assert batch.dtype == torch.float32 and batch.device.type == "cpu"
        for patch in batch:
            first = int(patch[0, 0, 0, 0])
            n, linear = divmod(first, CODE_STEP)
            corner = np.unravel_index(linear, SHAPES[n])
            i, j, k = (int(c) for c in corner)
            assert all(c + P <= s for c, s in zip(corner, SHAPES[n], strict=True))
            assert torch.equal(patch, volumes[n][:, i:i + P, j:j + P, k:k + P])
            sources.append(n)
            corners.append((i, j, k))
    return np.array(sources), np.array(corners)


@pytest.fixture(scope="module")
def uniform_draws() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {kind: _decode(_make(kind)) for kind in ("device", "queue")}


@pytest.fixture(scope="module")
def masked_draws() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {kind: _decode(_make(kind, masks=_masks())) for kind in ("device", "queue")}


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    values = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def _ks_critical(n: int, m: int, alpha: float = 1e-3) -> float:
    return float(np.sqrt(-np.log(alpha / 2) / 2 * (n + m) / (n * m)))


@pytest.mark.parametrize("kind", ["device", "queue"])
def test_corners_cover_every_valid_position(uniform_draws, kind):
    sources, corners = uniform_draws[kind]
    for n, shape in enumerate(SHAPES):
        for axis, size in enumerate(shape):
            seen = set(corners[sources == n, axis].tolist())
            assert seen == set(range(size - P + 1)), (kind, n, axis)


@pytest.mark.parametrize("kind", ["device", "queue"])
def test_volumes_are_chosen_equally_often(uniform_draws, kind):
    sources, _ = uniform_draws[kind]
    counts = np.bincount(sources, minlength=len(SHAPES))
    expected = len(sources) / len(SHAPES)
    sigma = np.sqrt(len(sources) * (1 / len(SHAPES)) * (1 - 1 / len(SHAPES)))
    assert np.all(np.abs(counts - expected) < 4 * sigma), counts


def test_samplers_draw_corners_from_the_same_distribution(uniform_draws):
    (src_d, cor_d), (src_q, cor_q) = uniform_draws["device"], uniform_draws["queue"]
    for n, shape in enumerate(SHAPES):
        for axis in range(3):
            a, b = cor_d[src_d == n, axis], cor_q[src_q == n, axis]
            assert _ks(a, b) < _ks_critical(len(a), len(b)), (n, axis)
            # and both are uniform: mean and variance of the discrete uniform on 0..m-1
            m = shape[axis] - P + 1
            for x in (a, b):
                se = np.sqrt((m**2 - 1) / 12 / len(x))
                assert abs(x.mean() - (m - 1) / 2) < 4 * se
                assert abs(x.var() / ((m**2 - 1) / 12) - 1) < 0.15


@pytest.mark.parametrize("kind", ["device", "queue"])
def test_a_mask_share_centres_that_share_of_patches_in_the_mask(kind):
    masks = _masks()
    sources, corners = _decode(_make(kind, masks=masks, mask_share=0.5))
    centres = corners + P // 2
    inside = np.array([bool(masks[n][0][tuple(c)]) for n, c in zip(sources, centres, strict=True)])
    # device: the other half is uniform and lands in the ball at the ball's share q of valid
    # centres; queue (torchio LabelSampler): the other half is centred outside the mask
    valid = [m[0][tuple(slice(P // 2, P // 2 + s - P + 1) for s in shape)]
             for m, shape in zip(masks, SHAPES, strict=True)]
    q = np.mean([float(v.float().mean()) for v in valid])
    expected = 0.5 + 0.5 * q if kind == "device" else 0.5
    se = np.sqrt(expected * (1 - expected) / len(inside))
    assert abs(inside.mean() - expected) < 4 * se, (inside.mean(), expected)


def test_masked_patches_are_centred_in_the_mask(masked_draws):
    masks = _masks()
    for kind, (sources, corners) in masked_draws.items():
        centres = corners + P // 2
        inside = [bool(masks[n][0][tuple(c)]) for n, c in zip(sources, centres, strict=True)]
        assert all(inside), kind
    (src_d, cor_d), (src_q, cor_q) = masked_draws["device"], masked_draws["queue"]
    for n in range(len(SHAPES)):
        for axis in range(3):
            a, b = cor_d[src_d == n, axis], cor_q[src_q == n, axis]
            assert _ks(a, b) < _ks_critical(len(a), len(b)), (n, axis)


@pytest.mark.parametrize("kind", ["device", "queue"])
def test_same_seed_same_batches_other_seed_other_batches(kind):
    first, again, other = _make(kind, seed=3), _make(kind, seed=3), _make(kind, seed=4)
    for _ in range(3):
        a, b, c = first.next_batch(), again.next_batch(), other.next_batch()
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_queue_sampler_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sampler = _make("queue")
    sampler.next_batch()
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("masks", [None, _masks()], ids=["uniform", "masked"])
def test_device_state_dict_resumes_the_exact_stream(masks):
    sampler = _make("device", seed=7, masks=masks)
    sampler.next_batch()
    state = {key: value.clone() for key, value in sampler.state_dict().items()}
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    expected = [sampler.next_batch() for _ in range(3)]
    resumed = _make("device", seed=99, masks=masks)
    resumed.load_state_dict(state)
    for batch in expected:
        assert torch.equal(resumed.next_batch(), batch)


def test_queue_state_dict_is_tensors():
    sampler = _make("queue")
    sampler.next_batch()
    state = sampler.state_dict()
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    sampler.load_state_dict(state)
    assert sampler.next_batch().shape == (BATCH, 2, P, P, P)


def test_queue_sampler_keeps_going_past_an_epoch():
    sampler = QueuePatchSampler(_volumes(), P, 4, affines=[np.eye(4)] * 3, seed=0,
                                samples_per_volume=2, queue_length=6)
    for _ in range(5):  # an epoch is 3 volumes x 2 patches = 1.5 batches
        assert sampler.next_batch().shape[1:] == (2, P, P, P)


def test_patch_bigger_than_a_volume_is_a_data_error():
    with pytest.raises(DataError, match="smaller than the patch size"):
        DevicePatchSampler(_volumes(), 13, 2, device="cpu", seed=0)


def test_mask_without_room_for_a_patch_is_a_data_error():
    masks = [torch.zeros(1, *shape, dtype=torch.bool) for shape in SHAPES]
    with pytest.raises(DataError, match="Mask 0"):
        DevicePatchSampler(_volumes(), P, 2, device="cpu", seed=0, masks=masks)


def test_unknown_sampler_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="device, queue"):
        _make("threads")
