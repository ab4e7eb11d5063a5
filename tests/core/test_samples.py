"""Built-in samples: real volumes from installed packages, with their files' geometry."""

from __future__ import annotations

import importlib.util
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_medgan.core.data import samples
from napari_medgan.core.data.io import read_volume
from napari_medgan.core.data.samples import (
    SAMPLE_NAMES,
    sample_modality,
    sample_volume,
    write_sample,
)
from napari_medgan.core.errors import DataError, OutputExistsError

EXPECTED = {
    "mni152_t1": ((197, 233, 189), "mr"),
    "mni152_gm": ((197, 233, 189), "mr"),
    "mni152_wm": ((197, 233, 189), "mr"),
    "ct_head": ((202, 202, 179), "ct"),
}


def test_names_are_fixed():
    assert SAMPLE_NAMES == ("mni152_t1", "mni152_gm", "mni152_wm", "ct_head")


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_loads_with_1mm_spacing_and_shape(name):
    volume = sample_volume(name)
    shape, modality = EXPECTED[name]
    assert volume.name == name
    assert volume.tensor.shape == (1, *shape)
    assert volume.tensor.dtype == torch.float32
    assert volume.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert float(volume.tensor.max()) > float(volume.tensor.min())
    assert sample_modality(name) == modality


def test_mni_affine_is_the_templates():
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=1)
    np.testing.assert_array_equal(sample_volume("mni152_t1").affine, template.affine)


def test_ct_head_is_the_atlas_file_without_importing_totalsegmentator():
    volume = sample_volume("ct_head")
    assert "totalsegmentator" not in sys.modules  # its dependencies are not installed
    folder = importlib.util.find_spec("totalsegmentator").submodule_search_locations[0]
    atlas = nib.load(f"{folder}/resources/ct_brain_atlas_1mm.nii.gz")
    np.testing.assert_allclose(volume.affine, atlas.affine, atol=1e-5)
    assert torch.equal(volume.tensor[0], torch.from_numpy(np.asarray(atlas.dataobj)).float())


def test_write_sample_round_trip(tmp_path):
    path = write_sample("ct_head", tmp_path / "head.nrrd")
    back = read_volume(path)
    np.testing.assert_allclose(back.affine, sample_volume("ct_head").affine, atol=1e-5)
    with pytest.raises(OutputExistsError, match="head.nrrd"):
        write_sample("ct_head", path)


def test_unknown_name_lists_the_names():
    with pytest.raises(DataError, match="'brain'.*mni152_t1, mni152_gm, mni152_wm, ct_head"):
        sample_volume("brain")


def test_missing_packages_say_what_to_install(monkeypatch):
    monkeypatch.setattr(samples.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps totalsegmentator"):
        sample_volume("ct_head")
    monkeypatch.setitem(sys.modules, "nilearn", None)  # makes `import nilearn` fail
    with pytest.raises(DataError, match="pip install nilearn"):
        sample_volume("mni152_t1")
