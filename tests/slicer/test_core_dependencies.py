"""Slicer installs ``napari-medgan`` without extras into its Python: that must pull no Qt
and no napari. Checked on the installed distributions' metadata (no network): the
closure of ``[project].dependencies`` over every ``Requires-Dist`` without an extra."""

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = re.compile(r"^(napari.*|pyqt5.*|pyqt6.*|pyside.*|qtpy|superqt|vispy|magicgui|"
                       r"npe2|app-model|slicer.*)$")


def closure(requirements: list[str]) -> dict[str, str]:
    """Every distribution these requirements pull, each with who asked for it."""
    environment = {**default_environment(), "extra": ""}
    pulled, todo = {}, [(r, "napari-medgan") for r in requirements]
    while todo:
        text, parent = todo.pop()
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue  # another platform's, or only with an extra
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in pulled:
            continue
        pulled[name] = parent
        try:
            todo += [(r, name) for r in metadata.requires(name) or []]
        except metadata.PackageNotFoundError:
            pass  # not installed here: it pulls nothing we could see
    return pulled


def test_the_core_without_extras_pulls_no_qt_and_no_napari():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pulled = closure(project["dependencies"])
    assert {"torch", "torchio", "numpy"} <= set(pulled)
    assert not {name: by for name, by in pulled.items() if FORBIDDEN.match(name)}
    # while the napari extra does pull them: the check can see Qt when it is there
    napari = closure(project["optional-dependencies"]["napari"])
    assert any(FORBIDDEN.match(name) for name in napari)
