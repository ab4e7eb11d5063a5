"""Shared bits of the bench scripts: a real training volume on disk, the results folder."""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads "
        f"(torch {torch.__version__})"
    )


def real_volume_file() -> str:
    """The shipped MNI152 T1, written once to a temporary NIfTI file."""
    from napari_medgan.core.data.io import write_volume
    from napari_medgan.core.data.samples import sample_volume

    path = Path(tempfile.gettempdir()) / "medgan-bench-mni152_t1.nii.gz"
    if not path.exists():
        write_volume(sample_volume("mni152_t1"), path)
    return str(path)


def halves(volume, folder: Path, pattern: str) -> tuple[Path, Path]:
    """Left and right halves along the first voxel axis, each keeping its place in the world.

    Written once as ``pattern.format(side=...)`` + ``.nii.gz`` in ``folder`` (a file already
    there is kept, so kept benchmark data is not rewritten).
    """
    from napari_medgan.core.data.io import write_volume
    from napari_medgan.core.data.volume import Volume

    half = volume.spatial_shape[0] // 2
    paths = []
    for side, start, stop in (("left", 0, half), ("right", half, volume.spatial_shape[0])):
        name = pattern.format(side=side)
        path = folder / f"{name}.nii.gz"
        if not path.exists():
            affine = volume.affine.copy()
            affine[:3, 3] += affine[:3, 0] * start
            write_volume(Volume(volume.tensor[:, start:stop].clone(), affine, name), path)
        paths.append(path)
    return paths[0], paths[1]


def report(name: str, header: list[str], rows: list[list], extra: dict) -> None:
    """Print a table and write it as JSON to bench/results/NAME.json."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": machine(),
        **extra,
        "rows": [dict(zip(header, r, strict=True)) for r in rows],
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    print(f"machine: {payload['machine']}; JSON: {RESULTS / f'{name}.json'}")
