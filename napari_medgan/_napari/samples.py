"""napari sample data: the real volumes that ship inside installed packages, true spacing kept."""

from __future__ import annotations

from napari_medgan.core import api

from .convert import LayerDataTuple, volume_to_layer_data


def _sample(name: str, **layer_kwargs) -> list[LayerDataTuple]:
    return [volume_to_layer_data(api.sample_volume(name), source=f"sample:{name}",
                                 **layer_kwargs)]


def mni152_t1() -> list[LayerDataTuple]:
    """The MNI152 T1 template (MR, 1 mm)."""
    return _sample("mni152_t1")


def mni152_gm() -> list[LayerDataTuple]:
    """The MNI152 grey matter probability map (1 mm)."""
    return _sample("mni152_gm", colormap="magma")


def ct_head() -> list[LayerDataTuple]:
    """The CT head atlas (1 mm, Hounsfield units), shown with a brain window."""
    return _sample("ct_head", contrast_limits=(-20.0, 100.0))
