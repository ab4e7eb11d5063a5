"""The manifest ships inside the package: in the wheel, and valid for npe2."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_manifest_is_the_top_level_file_through_a_symlink():
    link = ROOT / "napari_medgan" / "napari.yaml"
    assert link.is_symlink() and link.resolve() == (ROOT / "napari.yaml").resolve()
    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text())
    assert manifest["name"] == "napari-medgan"
    contributions = manifest["contributions"]
    assert [w["display_name"] for w in contributions["widgets"]] == [
        "Train", "Synthesize", "Apply"]
    assert [s["key"] for s in contributions["sample_data"]] == ["mni152_t1", "mni152_gm",
                                                                 "ct_head"]


def test_npe2_validates_the_installed_distribution_and_imports_every_command():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-medgan",
                             "--imports"],
                            capture_output=True, encoding="utf-8", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_wheel_holds_the_manifest(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "napari.yaml"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "napari_medgan", source / "napari_medgan", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("napari_medgan/napari.yaml")
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        assert "napari-medgan = napari_medgan:napari.yaml" in archive.read(entry_points).decode()
    assert shipped == (ROOT / "napari.yaml").read_bytes()
