"""DiffAugment in 3D: each transform is differentiable, does what it says, and is seeded."""

from typing import get_args

import pytest
import torch

from napari_medgan.core import augment
from napari_medgan.core.augment import BACKGROUND, diff_augment
from napari_medgan.core.config import Augmentation

P = 16  # patch side
TRANSFORMS = get_args(Augmentation)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_every_configurable_name_has_a_transform():
    assert set(augment._PIPELINE) == set(TRANSFORMS)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_lets_the_gradient_reach_its_input(name):
    x = torch.rand(4, 2, P, P, P, requires_grad=True)
    weights = torch.rand(4, 2, P, P, P)
    (diff_augment(x, [name], seeded()) * weights).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).float().mean() > 0.3


@pytest.mark.parametrize("name", TRANSFORMS)
def test_the_same_seed_gives_the_same_output_and_another_seed_another(name):
    x = torch.rand(8, 1, P, P, P)
    first = diff_augment(x, [name], seeded(1))
    assert torch.equal(first, diff_augment(x, [name], seeded(1)))
    assert not torch.equal(first, diff_augment(x, [name], seeded(2)))
    assert not torch.equal(first, x)


def test_no_augmentation_is_the_input_itself_and_draws_nothing():
    x, generator = torch.rand(2, 1, P, P, P), seeded()
    state = generator.get_state()
    assert diff_augment(x, [], generator) is x
    assert torch.equal(generator.get_state(), state)


def test_translation_moves_content_by_at_most_an_eighth_and_pads_with_background():
    x = torch.zeros(16, 1, P, P, P)
    centre = P // 2
    x[:, :, centre, centre, centre] = 1.0
    out = augment.translation(x, seeded())
    shifts = []
    for sample in out[:, 0]:
        (position,) = (sample == 1.0).nonzero().tolist()  # the bright voxel, moved
        shift = [p - centre for p in position]
        assert all(abs(s) <= P // 8 for s in shift)
        kept = 1
        for s in shift:
            kept *= P - abs(s)
        assert int((sample == BACKGROUND).sum()) == P**3 - kept  # the shifted-in voxels
        assert int((sample == 0).sum()) == kept - 1
        shifts.append(tuple(shift))
    assert len(set(shifts)) > 4  # each sample draws its own shift


def test_cutout_blanks_one_box_of_half_the_side_with_the_background():
    x = torch.zeros(8, 2, P, P, P)
    out = augment.cutout(x, seeded())
    corners = set()
    for sample in out:
        blank = sample == BACKGROUND
        assert torch.equal(blank[0], blank[1])  # the same box in every channel
        where = blank[0].nonzero()
        low, high = where.min(0).values, where.max(0).values
        assert (high - low + 1).tolist() == [P // 2] * 3 and len(where) == (P // 2) ** 3
        corners.add(tuple(low.tolist()))
    assert len(corners) > 4


def test_intensity_changes_mean_and_contrast_of_each_sample_within_the_stated_range():
    x = torch.rand(32, 1, P, P, P) * 2 - 1
    out = augment.intensity(x, seeded())
    dims = (1, 2, 3, 4)
    shift = out.mean(dims) - x.mean(dims)
    ratio = out.std(dims) / x.std(dims)
    assert shift.abs().max() <= augment.BRIGHTNESS + 1e-5 and shift.std() > 0.02
    low, high = augment.CONTRAST
    assert low - 1e-5 <= ratio.min() and ratio.max() <= high + 1e-5 and ratio.std() > 0.05


def test_flip_mirrors_whole_axes_of_each_sample():
    x = torch.rand(8, 1, P, P, P)
    out = augment.flip(x, seeded())
    seen = set()
    for before, after in zip(x, out, strict=True):
        matches = [axes for axes in range(8) if torch.equal(
            after, before.flip([1 + a for a in range(3) if axes >> a & 1] or [0]) if axes
            else before)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 2


def test_the_order_of_the_names_does_not_matter_and_the_cutout_stays_background():
    x = torch.rand(4, 1, P, P, P)
    names = ["cutout", "translation", "intensity"]
    out = diff_augment(x, names, seeded(3))
    assert torch.equal(out, diff_augment(x, names[::-1], seeded(3)))
    assert all(int((sample == BACKGROUND).sum()) >= (P // 2) ** 3 for sample in out)


def test_the_channels_last_layout_is_kept():
    x = torch.rand(2, 3, P, P, P).contiguous(memory_format=torch.channels_last_3d)
    out = diff_augment(x, TRANSFORMS, seeded())
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
