"""Sliding-window inference: exact stitching, padding, blending, progress and stop."""

from __future__ import annotations

import pytest
import torch

from napari_medgan.core.errors import ConfigError, DataError, MedGANError
from napari_medgan.core.infer import InferenceStopped, overlap_voxels, sliding_window

BLENDS = ("hann", "average", "crop")


def identity(batch: torch.Tensor) -> torch.Tensor:
    return batch.clone()


def small_net() -> torch.nn.Module:
    """Translation-equivariant, nonlinear, 1 -> 2 channels, receptive-field radius 1."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1)
    ).eval()


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize(
    "shape",
    [(32, 16, 48), (37, 50, 29), (10, 20, 5), (3, 1, 7), (16, 16, 16)],
    ids=["multiple", "not-multiple", "smaller", "tiny", "one-patch"],
)
def test_identity_reproduces_input(shape, blend):
    torch.manual_seed(1)
    volume = torch.randn(2, *shape)
    out = sliding_window(volume, identity, 16, blend=blend, batch_size=8)
    assert out.shape == volume.shape
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, volume, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_one_patch_equals_direct_prediction(overlap):
    net = small_net()
    volume = torch.randn(1, 16, 16, 16)
    out = sliding_window(volume, net, 16, overlap=overlap)
    with torch.no_grad():
        expected = net(volume[None])[0]
    assert out.shape == (2, 16, 16, 16)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_short_axes_padded_with_channel_minimum():
    # Each output voxel is the minimum of its whole patch, so any padding below the
    # channel's own minimum (zeros, say) would show up in the output.
    def patch_min(batch):
        return batch.amin(dim=(2, 3, 4), keepdim=True).expand_as(batch)

    volume = torch.rand(2, 10, 20, 5) + torch.tensor([3.0, 7.0]).view(2, 1, 1, 1)
    out = sliding_window(volume, patch_min, 16, blend="crop")
    for channel in range(2):
        assert out[channel].min() >= volume[channel].min() - 1e-6


def _grid_edges(size: int, patch: int, overlap: int) -> set[int]:
    """Voxel indices lying on an inner face of some patch of torchio's grid."""
    starts = list(range(0, size - patch + 1, patch - overlap))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    edges = {s for s in starts if s > 0} | {s + patch - 1 for s in starts if s + patch < size}
    return edges


def test_conv_net_matches_whole_volume():
    net = small_net()
    torch.manual_seed(2)
    shape = (40, 32, 24)
    volume = torch.randn(1, *shape)
    with torch.no_grad():
        whole = net(volume[None])[0]

    # crop keeps only voxels at least overlap/2 = 4 >= radius 1 away from inner patch faces:
    # exact everywhere, borders included (patches sit flush with the volume's faces).
    crop = sliding_window(volume, net, 16, overlap=0.5, blend="crop")
    torch.testing.assert_close(crop, whole, atol=1e-5, rtol=0)

    hann = sliding_window(volume, net, 16, overlap=0.5, blend="hann")
    average = sliding_window(volume, net, 16, overlap=0.5, blend="average")
    # Hann weights of overlapping patches must normalise: away from the patch faces, where
    # every patch sees its full receptive field, the blend is exact.
    clean = [
        torch.tensor([i for i in range(size) if i not in _grid_edges(size, 16, 8)])
        for size in shape
    ]
    interior = (slice(None), *torch.meshgrid(*clean, indexing="ij"))
    torch.testing.assert_close(hann[interior], whole[interior], atol=1e-4, rtol=0)
    # At the seams, hann's low weight at patch faces hides most of the faces' error
    # (it is small, not zero: torchio's window is not zero at the faces).
    hann_seam = (hann - whole).abs().max()
    average_seam = (average - whole).abs().max()
    assert 0 < hann_seam < 0.5 * average_seam


def test_multichannel_output_and_dtype():
    def three_channels(batch):
        return torch.cat([batch, 2 * batch, -batch], dim=1).double()

    volume = torch.rand(1, 20, 17, 9, dtype=torch.float64)
    original = volume.clone()
    out = sliding_window(volume, three_channels, 8, overlap=0.25, blend="hann")
    assert out.shape == (3, 20, 17, 9)
    assert out.dtype == torch.float32
    assert out.device.type == "cpu"
    torch.testing.assert_close(out[1], 2 * volume[0].float(), atol=1e-5, rtol=0)
    assert torch.equal(volume, original)


def test_progress_counts_up_to_total():
    calls = []
    # Along 37, 50, 29 with patch 16 and overlap 8: 4 x 6 x 3 grid positions.
    sliding_window(
        torch.zeros(1, 37, 50, 29),
        identity,
        16,
        batch_size=5,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert len(calls) == 15  # ceil(72 / 5)
    assert all(total == 72 for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(set(done))
    assert calls[-1] == (72, 72)


def test_stop_raises_and_stops_predicting():
    predicted = []

    def counting(batch):
        predicted.append(len(batch))
        return batch

    with pytest.raises(InferenceStopped, match="nothing was written") as info:
        sliding_window(
            torch.zeros(1, 40, 40, 40),
            counting,
            16,
            batch_size=2,
            stop=lambda: len(predicted) >= 1,
        )
    assert isinstance(info.value, MedGANError)
    assert predicted == [2]


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_bad_overlap_is_config_error(overlap):
    with pytest.raises(ConfigError, match=r"\[0, 1\)") as info:
        sliding_window(torch.zeros(1, 8, 8, 8), identity, 4, overlap=overlap)
    assert str(overlap) in str(info.value)


@pytest.mark.parametrize(
    ("overlap", "patch", "voxels"),
    [(0.5, 16, 8), (0.3, 16, 4), (0.99, 16, 14), (0.0, 16, 0), (0.6, 5, 2), (0.5, 1, 0)],
)
def test_overlap_voxels_even_and_below_patch(overlap, patch, voxels):
    assert overlap_voxels(overlap, patch) == voxels


def test_bad_arguments():
    with pytest.raises(ConfigError, match="Blend"):
        sliding_window(torch.zeros(1, 8, 8, 8), identity, 4, blend="max")
    with pytest.raises(DataError, match="C, D, H, W"):
        sliding_window(torch.zeros(8, 8, 8), identity, 4)
    with pytest.raises(ConfigError, match="Patch size"):
        sliding_window(torch.zeros(1, 8, 8, 8), identity, 0)
