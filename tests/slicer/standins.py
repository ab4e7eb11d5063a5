"""Stand-ins for the names ``slicer-core`` lacks and ``MedGAN.py`` imports: ``qt``,
``slicer.ScriptedLoadableModule`` and ``slicer.parameterNodeWrapper``.

They only let the file be imported outside Slicer; nothing the logic does goes
through them. ``install(setitem)`` takes ``monkeypatch.setitem`` (or a plain
setter for a subprocess).
"""

from __future__ import annotations

import sys
import types


def _module(name: str, **names) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(names)
    return module


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleTest:
    pass


def parameterNodeWrapper(cls):
    cls.wrapped_by_parameter_node_wrapper = True
    return cls


def install(setitem=lambda mapping, key, value: mapping.__setitem__(key, value)) -> None:
    setitem(sys.modules, "qt", _module("qt"))
    setitem(sys.modules, "slicer.ScriptedLoadableModule", _module(
        "slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
        ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleTest=ScriptedLoadableModuleTest))
    setitem(sys.modules, "slicer.parameterNodeWrapper", _module(
        "slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper,
        Choice=lambda choices: ("Choice", tuple(choices)),
        WithinRange=lambda low, high: ("WithinRange", low, high)))
