"""Helpers for the Slicer tests: an oblique grid, nodes read by Slicer, waiting for a run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import slicer

# an oblique, anisotropic IJK → RAS: rotated about two axes, 0.8 × 1.3 × 2.1 mm, shifted
_c, _s = np.cos(0.4), np.sin(0.4)
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = (np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]])
                   @ np.array([[1, 0, 0], [0, _c, _s], [0, -_s, _c]])
                   @ np.diag([0.8, 1.3, 2.1]))
OBLIQUE[:3, 3] = [-12.5, 30.25, 7.0]


def load_node(scene, path, node_class="vtkMRMLScalarVolumeNode", name=None):
    """A volume node read from ``path`` by Slicer's own storage node (LPS file → RAS node)."""
    node = scene.AddNewNodeByClass(node_class, name or Path(path).name.split(".")[0])
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node), path
    return node


def node_state(node) -> tuple:
    """What a user would notice changing: voxels, geometry, name, class, transform."""
    from MedGANLib.convert import ijk_to_ras

    return (node.GetClassName(), node.GetName(), ijk_to_ras(node).tobytes(),
            slicer.util.arrayFromVolume(node).tobytes(), node.GetTransformNodeID())


def wait_for(run, runner, until, timeout=240.0):
    """Deliver the run's lines on this (main) thread until ``until(run)`` or it finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runner.poll()
        if until(run) or run.progress.finished:
            return
        time.sleep(0.05)
    run.cancel(grace_s=1)
    raise AssertionError(f"training did not get there in {timeout} s: {run.progress}")


