"""Reader, writer and sample data in a real viewer: the file's geometry survives.

The test volume is the hardest kind: oblique, axis-permuted, anisotropic and stored
with voxel axes running towards left / posterior (LPS), as scanners write NRRD.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from napari import save_layers
from napari.layers import Image, Labels
from scipy.spatial.transform import Rotation

from napari_medgan._napari.convert import layer_to_volume, volume_to_layer_data
from napari_medgan._napari.reader import get_reader
from napari_medgan._napari.writer import write_image
from napari_medgan.core import api
from napari_medgan.core.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")


def _hard_affine() -> np.ndarray:
    """i → -A, j → +S, k → -R (a permutation with two flips), tilted 15°, 0.8 x 1.5 x 2.5 mm."""
    permute = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    tilt = Rotation.from_euler("xz", [15, -10], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = tilt @ permute @ np.diag([0.8, 1.5, 2.5])
    affine[:3, 3] = [31.25, -17.5, 12.125]
    return affine


@pytest.fixture
def hard_volume(real_dir) -> api.Volume:
    t1 = api.read_volume(real_dir / "t1_a.nii.gz")
    return api.Volume(t1.tensor[:, :20, :24, :28].clone(), _hard_affine(), "hard")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_file_to_layer_to_file_keeps_voxel_order_voxels_and_affine(
        make_napari_viewer, tmp_path, hard_volume, suffix):
    source = api.write_volume(hard_volume, tmp_path / f"hard{suffix}")
    original = api.read_volume(source)
    viewer = make_napari_viewer()
    layer, = viewer.open(str(source), plugin="napari-medgan")
    assert layer.metadata["source"] == str(source)
    assert layer.data.shape == (28, 20, 24)  # data axes follow R, A, S: k, i, j
    assert not np.allclose(layer.affine.affine_matrix, np.eye(4))  # oblique: the full affine

    written = tmp_path / f"again{suffix}"
    save_layers(str(written), [layer], plugin="napari-medgan")
    assert written.is_file()
    again = api.read_volume(written)
    assert again.tensor.shape == original.tensor.shape == (1, 20, 24, 28)
    assert torch.equal(again.tensor, original.tensor)
    np.testing.assert_allclose(again.affine, original.affine, atol=1e-6, rtol=0)


def test_a_point_in_napari_world_is_the_files_ras_millimetre(make_napari_viewer, tmp_path,
                                                             hard_volume):
    source = api.write_volume(hard_volume, tmp_path / "hard.nrrd")
    affine = api.read_volume(source).affine
    viewer = make_napari_viewer()
    layer, = viewer.open(str(source), plugin="napari-medgan")
    for ijk in ([0, 0, 0], [3, 17, 5], [19, 23, 27]):
        data_index = np.asarray(ijk)[list(layer.metadata["axes"])]
        np.testing.assert_allclose(layer.data_to_world(data_index), (affine @ [*ijk, 1])[:3],
                                   atol=1e-4)
        assert layer.data[tuple(data_index)] == pytest.approx(
            float(hard_volume.tensor[(0, *ijk)]), abs=1e-3)


def test_axis_aligned_lps_volume_opens_on_scale_and_translate(make_napari_viewer, tmp_path,
                                                              real_dir):
    t1 = api.read_volume(real_dir / "t1_a.nii.gz")
    affine = np.diag([-0.7, -0.7, 3.0, 1.0])
    affine[:3, 3] = [90.0, 120.0, -60.0]
    source = api.write_volume(api.Volume(t1.tensor, affine, "lps"), tmp_path / "lps.nrrd")
    viewer = make_napari_viewer()
    layer, = viewer.open(str(source), plugin="napari-medgan")
    np.testing.assert_allclose(layer.scale, [-0.7, -0.7, 3.0])
    np.testing.assert_allclose(layer.translate, [90.0, 120.0, -60.0])
    np.testing.assert_allclose(layer.affine.affine_matrix, np.eye(4))
    assert tuple(str(u) for u in layer.units) == ("millimeter",) * 3


def test_integer_label_map_opens_as_labels_and_saves_as_integers(make_napari_viewer, tmp_path,
                                                                 real_dir):
    viewer = make_napari_viewer()
    labels, = viewer.open(str(real_dir / "labels_a.nii.gz"), plugin="napari-medgan")
    image, = viewer.open(str(real_dir / "t1_a.nii.gz"), plugin="napari-medgan")
    assert (type(labels).__name__, type(image).__name__) == ("Labels", "Image")
    assert set(np.unique(labels.data)) == {0, 1, 2}
    written = tmp_path / "labels_again.nrrd"
    save_layers(str(written), [labels], plugin="napari-medgan")
    assert sitk.ReadImage(str(written)).GetPixelIDTypeAsString().startswith("8-bit unsigned")
    assert torch.equal(api.read_volume(written).tensor,
                       api.read_volume(real_dir / "labels_a.nii.gz").tensor)


def _dicom_series_writer(request):
    """The core tests' DICOM series writer: a tests/conftest.py fixture once the hardening
    branch is in, before that a function of tests/core/test_io.py."""
    try:
        return request.getfixturevalue("write_dicom_series")
    except pytest.FixtureLookupError:
        path = Path(__file__).parents[1] / "core" / "test_io.py"
        spec = importlib.util.spec_from_file_location("core_test_io", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.write_dicom_series


def test_dicom_folder_and_tiff_stack_open_with_their_spacing(make_napari_viewer, tmp_path,
                                                             real_dir, request):
    t1 = api.read_volume(real_dir / "t1_a.nii.gz").tensor[0, :12, :10, :6].numpy()
    series = tmp_path / "series"
    _dicom_series_writer(request)(series, t1.transpose().astype(np.int16),
                                  spacing=(0.6, 0.7, 2.5), origin=(5.0, -3.0, 12.0))
    tiff = api.write_volume(api.Volume(torch.from_numpy(t1)[None], np.diag([0.5, 0.5, 2.0, 1.0]),
                                       "t"), tmp_path / "stack.tif")
    viewer = make_napari_viewer()
    dicom, = viewer.open(str(series), plugin="napari-medgan")
    stack, = viewer.open(str(tiff), plugin="napari-medgan")
    np.testing.assert_allclose(np.abs(dicom.scale), (0.6, 0.7, 2.5), atol=1e-4)
    np.testing.assert_allclose(dicom.translate, (-5.0, 3.0, 12.0), atol=1e-4)
    np.testing.assert_allclose(stack.scale, (0.5, 0.5, 2.0))
    assert dicom.data.shape == stack.data.shape == (12, 10, 6)
    np.testing.assert_array_equal(stack.data, t1)


def test_a_layer_made_in_napari_saves_with_its_scale_and_translate(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.random.rand(8, 9, 10).astype(np.float32), name="drawn",
                             scale=(0.5, 1.0, 2.0), translate=(10.0, -5.0, 3.0))
    save_layers(str(tmp_path / "drawn.nrrd"), [layer], plugin="napari-medgan")
    saved = api.read_volume(tmp_path / "drawn.nrrd")
    expected = np.diag([0.5, 1.0, 2.0, 1.0])
    expected[:3, 3] = (10.0, -5.0, 3.0)
    np.testing.assert_allclose(saved.affine, expected, atol=1e-9)
    np.testing.assert_array_equal(saved.tensor[0].numpy(), layer.data)


@pytest.mark.parametrize("key", ["mni152_t1", "mni152_gm", "ct_head"])
def test_sample_data_opens_from_the_plugin_menu(make_napari_viewer, key):
    viewer = make_napari_viewer()
    layer, = viewer.open_sample("napari-medgan", key)
    volume = api.sample_volume(key)
    assert layer.data.shape == tuple(np.array(volume.spatial_shape)[list(layer.metadata["axes"])])
    assert layer.metadata["source"] == f"sample:{key}"
    np.testing.assert_allclose(layer_to_volume(layer).affine, volume.affine)


def test_a_volume_with_a_time_axis_opens_to_browse_but_is_refused_for_training(
        make_napari_viewer, tmp_path):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    series = np.random.default_rng(0).random((8, 9, 10, 3), dtype=np.float32)  # i, j, k, t
    nib.save(nib.Nifti1Image(series, affine), tmp_path / "fmri.nii.gz")
    viewer = make_napari_viewer()
    layer, = viewer.open(str(tmp_path / "fmri.nii.gz"), plugin="napari-medgan")
    assert layer.data.shape == (3, 8, 9, 10)
    np.testing.assert_allclose(layer.scale, (1.0, 2.0, 2.0, 3.0))
    with pytest.raises(DataError, match="layer:fmri has 4 dimensions .* time axis"):
        layer_to_volume(layer)


def test_get_reader_refuses_what_it_cannot_read_without_raising(tmp_path, real_dir):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("x")
    for path in (tmp_path / "notes.txt", tmp_path / "folder", tmp_path / "missing.nii.gz",
                 [str(real_dir / "t1_a.nii.gz"), str(tmp_path / "notes.txt")], [], None,
                 "bad\0name.nii"):
        assert get_reader(path) is None
    assert get_reader(str(real_dir / "t1_a.nii.gz")) is not None


@pytest.mark.parametrize("data, message", [
    (np.zeros((8, 9)), "2D image"),
    (np.zeros((3, 8, 9, 10)), "time axis"),
    (np.zeros((8, 9, 10, 3), np.uint8), "RGB"),
])
def test_layers_that_are_not_3d_volumes_are_refused_by_name(make_napari_viewer, data, message):
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="odd", rgb=data.shape[-1] == 3)
    with pytest.raises(DataError, match=f"layer:odd .*{message}"):
        layer_to_volume(layer)
    assert viewer.layers["odd"].data is data  # nothing lost


def test_volume_to_layer_data_round_trips_a_labels_volume():
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    labels = api.Volume(torch.randint(0, 4, (1, 5, 6, 7)).to(torch.uint8), affine, "seg")
    data, kwargs, kind = volume_to_layer_data(labels, layer_type="labels", name="seg result")
    assert kind == "labels" and data.dtype == np.uint8 and kwargs["name"] == "seg result"
    back = layer_to_volume(Labels(data, **kwargs))
    assert back.tensor.dtype == torch.uint8 and torch.equal(back.tensor, labels.tensor)
    np.testing.assert_array_equal(back.affine, affine)


def test_nifti_written_by_the_plugin_is_a_plain_nifti(tmp_path, hard_volume):
    """Other tools read the file: nibabel sees the same affine."""
    path = tmp_path / "plain.nii.gz"
    (data, kwargs, _), = [volume_to_layer_data(hard_volume)]
    layer = Image(data, **kwargs)
    write_image(str(path), *layer.as_layer_data_tuple()[:2])
    np.testing.assert_allclose(nib.load(path).affine, hard_volume.affine, atol=1e-5)
