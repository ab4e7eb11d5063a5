"""Intensity normalisation: CT in HU windows, MR by percentiles, and the modality guess."""

from __future__ import annotations

import warnings

import pytest
import torch

from napari_medgan.core.data.normalize import (
    IntensityNormalization,
    denormalize,
    detect_modality,
    fit_normalization,
    normalize,
    percentiles,
)
from napari_medgan.core.data.samples import sample_volume
from napari_medgan.core.errors import CheckpointError, ConfigError, DataError, MedGANWarning


def test_ct_window_round_trip_gives_hu_back():
    hu = torch.tensor([-1000.0, -500.0, 0.0, 40.0, 1000.0]).reshape(1, 5, 1, 1)
    norm = fit_normalization([hu], modality="ct")
    assert (norm.modality, norm.low, norm.high) == ("ct", -1000.0, 1000.0)
    scaled = normalize(norm, hu)
    torch.testing.assert_close(scaled.flatten(), torch.tensor([-1.0, -0.5, 0.0, 0.04, 1.0]))
    torch.testing.assert_close(denormalize(norm, scaled), hu)


def test_ct_window_clips_outside_values():
    norm = fit_normalization([torch.zeros(1)], modality="ct", ct_window=(-100, 300))
    scaled = normalize(norm, torch.tensor([-3000.0, 100.0, 3000.0]))
    torch.testing.assert_close(scaled, torch.tensor([-1.0, 0.0, 1.0]))


def test_mr_percentiles_map_each_volume_into_unit_range():
    generator = torch.Generator().manual_seed(0)
    bright = torch.rand(1, 20, 20, 20, generator=generator) * 3000 + 500
    dim = torch.rand(1, 20, 20, 20, generator=generator) * 100
    norm = fit_normalization([bright, dim], modality="mr", mr_percentiles=(1, 99))
    for volume in (bright, dim):
        scaled = normalize(norm, volume)
        assert scaled.min() == -1 and scaled.max() == 1
        inside = (scaled > -1) & (scaled < 1)
        assert 0.97 < inside.float().mean() < 0.99  # only the outer 2 % is clipped
    low = (percentiles(bright, [1])[0] + percentiles(dim, [1])[0]) / 2
    high = (percentiles(bright, [99])[0] + percentiles(dim, [99])[0]) / 2
    assert norm.low == pytest.approx(low) and norm.high == pytest.approx(high)
    torch.testing.assert_close(denormalize(norm, torch.tensor([-1.0, 1.0])),
                               torch.tensor([low, high]))


def test_percentiles_of_a_large_volume_use_a_subsample():
    big = torch.arange(20_000_000, dtype=torch.float32)  # above torch.quantile's input limit
    low, high = percentiles(big, [1, 99])
    assert low == pytest.approx(200_000, rel=0.02) and high == pytest.approx(19_800_000, rel=0.01)


def test_to_dict_from_dict_round_trip():
    norm = IntensityNormalization("mr", 0.1, 0.9, (1.0, 99.0))
    assert IntensityNormalization.from_dict(norm.to_dict()) == norm
    with pytest.raises(CheckpointError, match="normalisation"):
        IntensityNormalization.from_dict({"modality": "ct"})


def test_detect_modality_on_real_samples():
    ct = sample_volume("ct_head").tensor
    mr = sample_volume("mni152_t1").tensor
    # The atlas holds no air in HU (background is 0): the air rule alone would miss it.
    assert percentiles(ct, [0.5])[0] > -500
    assert detect_modality([ct]) == "ct"
    assert detect_modality([mr]) == "mr"
    assert fit_normalization([ct]).modality == "ct"


def test_detect_modality_rules():
    air = torch.full((1, 8, 8, 8), -1000.0)
    air[0, 4:] = 0.3  # a float CT with air
    assert detect_modality([air]) == "ct"
    assert detect_modality([torch.arange(512.0).reshape(1, 8, 8, 8)]) == "mr"  # no negatives
    z_scored = torch.linspace(-2.5, 3.5, 512).reshape(1, 8, 8, 8)  # processed MR: floats
    assert detect_modality([z_scored]) == "mr"
    with pytest.raises(DataError, match="mix of CT and MR"):
        detect_modality([air, z_scored])


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="pet"):
        fit_normalization([torch.zeros(1)], modality="pet")
    norm = IntensityNormalization("mr", 0.0, 1.0)
    with pytest.raises(DataError, match="constant"):
        normalize(norm, torch.ones(1, 4, 4, 4))


def test_check_modality_refuses_only_plain_mismatches():
    from napari_medgan.core.data.normalize import IntensityNormalization, check_modality
    from napari_medgan.core.errors import DataError

    mr_model = IntensityNormalization("mr", 0.0, 1.0)
    ct_model = IntensityNormalization("ct", -1000.0, 1000.0)
    head_ct = torch.full((1, 8, 8, 8), -1000.0)
    head_ct[:, 2:6, 2:6, 2:6] = 40.0
    mr = torch.rand(1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match="looks like CT"):
        check_modality(mr_model, head_ct, "head.nii.gz")
    with pytest.raises(DataError, match="looks like MR"):
        check_modality(ct_model, mr, "brain.nii.gz")
    check_modality(mr_model, mr, "brain.nii.gz")
    check_modality(ct_model, head_ct, "head.nii.gz")
    check_modality(ct_model, torch.arange(512.0).reshape(1, 8, 8, 8), "ct_without_air.nii.gz")


def test_ct_whose_tissue_fills_a_sliver_of_the_window_is_warned_about():
    brain_only = sample_volume("ct_head").tensor  # -30...385 HU, air set to 0
    with pytest.warns(MedGANWarning, match=r"spans only 2% of data.ct_window \(-1000, 1000\)"
                      r".*brain: 0, 80"):
        fit_normalization([brain_only])
    head = torch.full((1, 20, 20, 20), -1000.0)  # air, soft tissue and bone
    head[:, 5:15, 5:15, 5:15] = 40.0
    head[:, 5:15, 5:7, 5:15] = 900.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedGANWarning)
        fit_normalization([brain_only], ct_window=(0.0, 80.0))  # the brain window
        fit_normalization([head])
        fit_normalization([brain_only], modality="mr")
