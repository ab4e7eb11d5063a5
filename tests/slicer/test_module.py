"""MedGAN.py and its extension files, outside Slicer (stand-ins only for what slicer-core lacks)."""

import json
import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET

import pytest
import slicer

from . import standins
from .conftest import MODULE_DIR

EXTENSION_DIR = MODULE_DIR.parent


@pytest.fixture
def medgan(monkeypatch):
    standins.install(monkeypatch.setitem)
    monkeypatch.delitem(sys.modules, "MedGAN", raising=False)
    import MedGAN

    yield MedGAN
    sys.modules.pop("MedGAN", None)


def test_importing_the_module_imports_and_installs_nothing_heavy(tmp_path):
    """A fresh Python: importing MedGAN.py loads neither torch nor the core, installs nothing."""
    script = f"""
import json, sys
sys.path[:0] = [{str(MODULE_DIR)!r}, {str(MODULE_DIR.parents[1])!r}]
from tests.slicer import standins
standins.install()
import slicer.util
calls = []
slicer.util.pip_install = lambda *a, **k: calls.append(a)
import MedGAN
print(json.dumps({{"heavy": sorted(m for m in ("torch", "napari_medgan", "MedGANLib.logic")
                                    if m in sys.modules), "pip": calls,
                  "title": MedGAN.MedGAN(type("P", (), {{}})()).parent.title}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "pip": [], "title": "MedGAN"}


def test_the_modules_logic_is_medganlibs(medgan):
    from MedGANLib.logic import MedGANLogic

    assert medgan.MedGANLogic is MedGANLogic
    with pytest.raises(AttributeError):
        medgan.NoSuchThing  # noqa: B018


def test_the_parameter_node_holds_what_the_panel_shows(medgan):
    fields = medgan.MedGANParameterNode.__annotations__
    assert medgan.MedGANParameterNode.wrapped_by_parameter_node_wrapper
    assert {"task", "inputVolume", "targetVolume", "labelsNode", "maskVolume", "outputNode",
            "checkpointFolder", "patch", "steps", "batch", "device", "seed", "count",
            "overlap"} <= set(fields)
    ui = ET.parse(MODULE_DIR / "Resources" / "UI" / "MedGAN.ui")
    bound = {p.find("string").text for p in ui.iter("property")
             if p.get("name") == "SlicerParameterName"}
    # connectGui binds every field but the task, whose list comes from the core
    assert bound == set(fields) - {"task"}
    names = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "MedGAN.py").read_text()))
    assert used and used <= names


def test_training_uses_launch_console_process_where_it_is_asynchronous(medgan):
    # slicer-core 5.13 has Slicer 5.12's launchConsoleProcess(blocking=False, ...)
    assert medgan.hasAsyncLaunch()
    assert isinstance(slicer.util.launchConsoleProcess, types.FunctionType)


def test_the_extension_build_lists_every_file_and_depends_on_pytorch():
    top = (EXTENSION_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"set\(EXTENSION_DEPENDS PyTorch\)", top)
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL",
                "SCREENSHOTURLS"):
        assert f"set(EXTENSION_{key} " in top
    module = (MODULE_DIR / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "MedGAN")
    assert "WITH_GENERIC_TESTS" in module
    for path in [*MODULE_DIR.glob("MedGANLib/*.py"), *MODULE_DIR.glob("Resources/*/*"),
                 MODULE_DIR / "Resources" / "requirements.txt", MODULE_DIR / "MedGAN.py"]:
        assert str(path.relative_to(MODULE_DIR)) in module, path


def test_requirements_never_install_torch():
    lines = [line.split("#")[0].strip()
             for line in (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=\[ ]", line)[0].lower() for line in lines if line}
    assert "napari-medgan" in names and "torch" not in names
    assert not any("[" in line for line in lines)  # no extras: no napari, no Qt
