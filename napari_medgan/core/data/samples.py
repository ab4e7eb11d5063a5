"""Real sample volumes that ship inside installed packages: nothing is downloaded.

- ``mni152_t1``, ``mni152_gm``, ``mni152_wm``: the MNI152 T1 template and its grey / white
  matter maps from nilearn (197 x 233 x 189 at 1 mm).
- ``ct_head``: the CT brain atlas in the totalsegmentator wheel (202 x 202 x 179 at 1 mm,
  HU with air set to 0, so values run only from about -30 to 385).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..errors import DataError
from ..output import check_output
from .io import read_volume, write_volume
from .volume import Volume

SAMPLE_NAMES = ("mni152_t1", "mni152_gm", "mni152_wm", "ct_head")
_MODALITIES = {"mni152_t1": "mr", "mni152_gm": "mr", "mni152_wm": "mr", "ct_head": "ct"}
_NILEARN_LOADERS = {
    "mni152_t1": "load_mni152_template",
    "mni152_gm": "load_mni152_gm_template",
    "mni152_wm": "load_mni152_wm_template",
}
_CT_ATLAS = Path("resources", "ct_brain_atlas_1mm.nii.gz")


def sample_volume(name: str) -> Volume:
    """Load the built-in sample ``name`` (one of :data:`SAMPLE_NAMES`) with its real affine."""
    _check_name(name)
    if name == "ct_head":
        volume = read_volume(_ct_atlas_path())
    else:
        volume = _nilearn_volume(_NILEARN_LOADERS[name])
    volume.name = name
    return volume


def sample_modality(name: str) -> str:
    """``"mr"`` or ``"ct"``: what the sample is, whatever the intensity heuristic guesses."""
    _check_name(name)
    return _MODALITIES[name]


def write_sample(name: str, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the sample ``name`` to ``path`` (format from the suffix); the place is
    checked before the sample is loaded."""
    _check_name(name)
    check_output(path, kind="volume", overwrite=overwrite)
    return write_volume(sample_volume(name), path, overwrite=overwrite)


def _check_name(name: str) -> None:
    if name not in SAMPLE_NAMES:
        raise DataError(
            f"There is no sample called {name!r}; choose one of {', '.join(SAMPLE_NAMES)}."
        )


def _nilearn_volume(loader: str) -> Volume:
    try:
        from nilearn import datasets
    except ImportError as err:
        raise DataError("The MNI152 samples need nilearn: pip install nilearn") from err
    image = getattr(datasets, loader)(resolution=1)
    tensor = torch.from_numpy(image.get_fdata(dtype="float32"))[None]
    return Volume(tensor.contiguous(), image.affine)


def _ct_atlas_path() -> Path:
    """Find the atlas file without importing totalsegmentator (its dependencies are absent)."""
    spec = importlib.util.find_spec("totalsegmentator")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / _CT_ATLAS).is_file():
            return Path(folder) / _CT_ATLAS
    raise DataError(
        "The ct_head sample needs the totalsegmentator wheel's data file: "
        "pip install --no-deps totalsegmentator"
    )
