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


def text(path) -> str:
    return path.read_text(encoding="utf-8")


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
report = {{"heavy": sorted(m for m in ("torch", "napari_medgan", "MedGANLib.logic")
                          if m in sys.modules), "pip": calls,
          "title": MedGAN.MedGAN(type("P", (), {{}})()).parent.title}}
sys.modules["napari_medgan"] = None  # as in a Slicer where the core is not installed yet
report["logic before install"] = hasattr(MedGAN, "MedGANLogic")
print(json.dumps(report))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "pip": [], "title": "MedGAN", "logic before install": False}


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
    used = set(re.findall(r"self\.ui\.(\w+)", text(MODULE_DIR / "MedGAN.py")))
    assert used and used <= names


def test_the_patch_list_offers_every_size_the_core_takes_and_no_other(medgan):
    from napari_medgan.core import api

    def accepted(size: int) -> bool:
        config = api.Config()
        config.model.patch_size = size
        try:
            config.validate()
        except api.ConfigError:
            return False
        return True

    annotation = medgan.MedGANParameterNode.__annotations__["patch"]
    assert annotation.__metadata__ == (("Choice", tuple(medgan.PATCH_SIZES)),)
    assert medgan.PATCH_SIZES == [size for size in range(1, 1025) if accepted(size)]
    assert medgan.MedGANParameterNode.patch in medgan.PATCH_SIZES
    # a list, not a spin box whose arrows step to sizes the core refuses
    ui = ET.parse(MODULE_DIR / "Resources" / "UI" / "MedGAN.ui")
    bound = {p.find("string").text: widget.get("class") for widget in ui.iter("widget")
             for p in widget.findall("property") if p.get("name") == "SlicerParameterName"}
    assert bound["patch"] == "QComboBox"


def test_training_uses_launch_console_process_where_it_is_asynchronous(medgan):
    # slicer-core 5.13 has Slicer 5.12's launchConsoleProcess(blocking=False, ...)
    assert medgan.hasAsyncLaunch()
    assert isinstance(slicer.util.launchConsoleProcess, types.FunctionType)


def test_the_extension_build_lists_every_file_and_depends_on_pytorch():
    top = text(EXTENSION_DIR / "CMakeLists.txt")
    assert re.search(r"set\(EXTENSION_DEPENDS PyTorch\)", top)
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL",
                "SCREENSHOTURLS"):
        assert f"set(EXTENSION_{key} " in top
    module = text(MODULE_DIR / "CMakeLists.txt").replace("${MODULE_NAME}", "MedGAN")
    assert "WITH_GENERIC_TESTS" in module
    for path in [*MODULE_DIR.glob("MedGANLib/*.py"), *MODULE_DIR.glob("Resources/*/*"),
                 MODULE_DIR / "Resources" / "requirements.txt", MODULE_DIR / "MedGAN.py"]:
        assert str(path.relative_to(MODULE_DIR)) in module, path


def test_requirements_never_install_torch():
    lines = [line.split("#")[0].strip()
             for line in text(MODULE_DIR / "Resources" / "requirements.txt").splitlines()]
    names = {re.split(r"[<>=\[ ]", line)[0].lower() for line in lines if line}
    assert "napari-medgan" in names and "torch" not in names
    assert not any("[" in line for line in lines)  # no extras: no napari, no Qt


class FakePyTorchUtils:
    """The PyTorch extension's module, as far as MedGAN uses it."""

    def __init__(self, installed: bool, install_gives=None):
        self.installed, self.install_gives, self.asked = installed, install_gives, []
        outer = self

        class PyTorchUtilsLogic:
            def torchInstalled(self):
                return outer.installed

            def installTorch(self, askConfirmation=False, **kwargs):
                outer.asked.append(askConfirmation)
                return outer.install_gives

        self.PyTorchUtilsLogic = PyTorchUtilsLogic


@pytest.fixture
def shown(monkeypatch):
    messages = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: messages.append(text))
    return messages


def test_torch_comes_only_from_the_pytorch_extension(medgan, monkeypatch, shown):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the extension is not installed
    assert not medgan.ensureTorch("auto")
    assert "needs the PyTorch extension" in shown[-1]

    declined = FakePyTorchUtils(installed=False, install_gives=None)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", declined)
    assert not medgan.ensureTorch("auto")
    assert declined.asked == [True]  # installTorch asked the user first
    assert "PyTorch, which was not installed" in shown[-1]

    monkeypatch.setitem(sys.modules, "PyTorchUtils", FakePyTorchUtils(installed=True))
    assert medgan.ensureTorch("cpu")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_without_a_cuda_torch_says_what_to_do(medgan, monkeypatch, shown):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", FakePyTorchUtils(installed=True))
    assert not medgan.ensureTorch("cuda")
    assert "sees no CUDA GPU" in shown[-1] and "PyTorch Utils" in shown[-1]


def test_an_installed_core_is_used_without_asking(medgan, monkeypatch):
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda *a, **k: pytest.fail("asked to install an installed core"))
    monkeypatch.setattr(slicer.util, "pip_install",
                        lambda *a, **k: pytest.fail("installed an installed core"))
    assert medgan.ensureCore()


def test_a_missing_core_is_installed_only_after_the_user_agrees(medgan, monkeypatch):
    import builtins

    real_import = builtins.__import__
    installed = []

    def without_core(name, *args, **kwargs):
        if name.startswith("napari_medgan") and not installed:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_core)
    monkeypatch.delattr(slicer, "pydeps", raising=False)  # Slicer < 5.12
    asked = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, *a, **k: asked.append(text) or False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda reqs, **k: installed.append(reqs))
    assert not medgan.ensureCore() and not installed  # declined: nothing installed
    assert "napari-medgan" in asked[0] and "psutil" in asked[0] and "torch" not in asked[0]
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True)
    monkeypatch.setattr(slicer.util, "WaitCursor", __import__("contextlib").nullcontext)
    assert medgan.ensureCore()
    assert installed == [["napari-medgan>=0.1", "psutil>=5.9"]]
