"""What the MedGAN module does, on MRML nodes and without a GUI.

Every call goes through ``napari_medgan.core.api``, so a checkpoint behaves here
exactly as in napari and in ``medgan``. Results are new nodes unless the user
chose an existing node as the output; nothing is created or changed before the
core has succeeded, so a refused input leaves the scene as it was.

The class imports only MRML (``slicer``), ``vtk``, ``numpy`` and the core, so it
runs on the ``slicer-core`` package as it is: that is how it is tested.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import slicer

from napari_medgan.core import api
from napari_medgan.core.errors import DataError

from .convert import (
    SCALAR_VOLUME,
    check_volume_node,
    node_from_volume,
    read_node_file,
    segmentation_from_labels,
    volume_from_node,
    write_node_file,
)
from .process import Runner, TrainingProgress, TrainingRun

ATTRIBUTE = "MedGAN."  # prefix of the attributes a result node carries (task, checkpoint, …)
#: the reference from a synthesized patch's volume node to its segmentation (image + label pairs)
LABELS_REFERENCE = "MedGAN.labels"


class MedGANLogic:
    """Synthesize, apply and train on the nodes of ``scene`` (default ``slicer.mrmlScene``).

    ``python`` runs ``medgan train``: Slicer's own Python (``sys.executable`` is
    ``PythonSlicer`` there), so the process sees the packages the module installed.
    """

    def __init__(self, scene=None, python: str = sys.executable) -> None:
        self._scene = scene
        self.python = python

    @property
    def scene(self):
        return self._scene or slicer.mrmlScene

    def synthesize(self, checkpoint: str, n: int, seed: int = 0, center_ras=None, *,
                   device: str = "auto") -> list:
        """``n`` new scalar volume nodes from a synthesis checkpoint.

        Each has the card's spacing and direction and intensities in the card's units,
        is named after the checkpoint and seed, and is centred at ``center_ras``
        (default: the RAS origin). A model trained with label maps adds a segmentation
        node per patch (one segment per class, on the patch's geometry), named after the
        patch with `` labels`` and referenced from it as :data:`LABELS_REFERENCE`.
        """
        model = api.load_model(checkpoint, device=device)
        if model.generates_labels:
            pairs = api.synthesize_pairs(model, n=n, seed=seed)
        else:
            pairs = [(volume, None) for volume in api.synthesize(model, n=n, seed=seed)]
        centre = np.zeros(3) if center_ras is None else np.asarray(center_ras, dtype=float)
        stem = Path(checkpoint).name
        nodes = []
        for index, (volume, labels) in enumerate(pairs):
            affine = volume.affine.copy()
            middle = (np.asarray(volume.spatial_shape) - 1) / 2
            affine[:3, 3] = centre - affine[:3, :3] @ middle
            name = f"{stem}_seed{seed}_{index:03d}"
            node = node_from_volume(api.Volume(volume.tensor, affine, volume.name), name,
                                    scene=self.scene)
            self._label(node, model, checkpoint, seed=str(seed))
            if labels is not None:
                segmentation = segmentation_from_labels(
                    api.Volume(labels.tensor, affine, labels.name), node,
                    model.task.label_values, f"{name} labels",
                    segment_names=model.card["class_names"], scene=self.scene)
                self._label(segmentation, model, checkpoint, seed=str(seed))
                node.SetNodeReferenceID(LABELS_REFERENCE, segmentation.GetID())
            nodes.append(node)
        return nodes

    def apply(self, checkpoint: str, input_node, mask_node=None, reverse: bool = False, *,
              output_node=None, overlap: float = 0.5, device: str = "auto",
              progress: Callable[[int, int], None] | None = None):
        """Run a model over ``input_node``; the result sits on the input's exact grid.

        Translation, cycle and inpainting give a scalar volume, segmentation a
        segmentation node (one segment per label, the input's reference geometry),
        anomaly a scalar anomaly map with the volume's score in the attribute
        ``MedGAN.anomaly_score``. ``output_node``: an existing node to overwrite,
        only when the user chose it.
        """
        volume = volume_from_node(input_node, "input")
        mask = None if mask_node is None else volume_from_node(mask_node, "mask")
        model = api.load_model(checkpoint, device=device)
        result = api.apply(model, volume, mask=mask, overlap=overlap, reverse=reverse,
                           progress=progress)
        name = f"{input_node.GetName()}_{model.task_name}{'_reverse' if reverse else ''}"
        if model.task.output == "labels":
            node = segmentation_from_labels(result, input_node, model.task.label_values, name,
                                            node=output_node, scene=self.scene)
        else:
            node = node_from_volume(result, name, node=output_node, scene=self.scene)
        self._label(node, model, checkpoint, input=input_node.GetName())
        if model.task_name == "anomaly":
            node.SetAttribute(f"{ATTRIBUTE}anomaly_score", f"{api.anomaly_score(result):.6g}")
        return node

    def _label(self, node, model: api.Model, checkpoint: str, **more: str) -> None:
        """Attributes saying where a result came from (saved with the scene)."""
        for key, value in {"task": model.task_name, "checkpoint": str(checkpoint),
                           **more}.items():
            node.SetAttribute(f"{ATTRIBUTE}{key}", value)

    def train(self, out: str, *, runner: Runner, task: str = "synthesis",
              data: Sequence = (), targets: Sequence = (), labels: Sequence = (),
              masks: Sequence = (), patch: int | None = None, steps: int | None = None,
              batch: int | None = None, device: str | None = None, seed: int | None = None,
              config_file: str | None = None, resume: str | None = None,
              overwrite: bool = False,
              on_update: Callable[[TrainingProgress, dict | None], None] | None = None,
              preview_node=None) -> TrainingRun:
        """Start ``medgan train --events jsonl`` in the background and follow it.

        ``data``, ``targets``, ``labels``, ``masks``: volume nodes or file / folder
        paths. Nodes are written as ``.nrrd`` with their geometry into the folder
        ``<out>-data`` beside the checkpoint (so a resumed run finds them again); a
        segmentation node as labels becomes a label map on its volume's grid.
        ``preview_node`` (created on the first preview when None) shows each
        preview the process writes. Settings left None come from ``config_file``
        or the core's defaults. Returns the :class:`TrainingRun`; ``cancel()`` it
        to stop with a checkpoint.
        """
        out_path = Path(out)
        continuing = resume is not None and Path(resume).resolve() == out_path.resolve()
        files_given = [item for group in (data, targets, labels, masks) for item in group
                       if isinstance(item, str | Path)]
        api.check_output(out_path, kind="checkpoint", overwrite=overwrite or continuing,
                         inputs=files_given)  # the core's rules, before anything is written
        if not data:
            raise DataError("No training data: choose a volume node or give volume files.")
        for role, items in (("training volume", data), ("target volume", targets),
                            ("mask", masks)):
            for item in items:  # every node checked before any file is written
                if not isinstance(item, str | Path):
                    check_volume_node(item, role)
        folder = out_path.with_name(f"{out_path.name}-data")
        files = {
            "--data": self._files(data, folder, "data", "training volume"),
            "--target": self._files(targets, folder, "target", "target volume"),
            "--labels": self._files(labels, folder, "labels", "label map", references=data),
            "--mask": self._files(masks, folder, "mask", "mask"),
        }
        args = [self.python, "-m", "napari_medgan.cli", "train", "--task", task,
                "--out", str(out_path), "--events", "jsonl"]
        for flag, paths in files.items():
            if paths:
                args += [flag, *paths]
        settings = {"--patch": patch, "--steps": steps, "--batch": batch, "--device": device,
                    "--seed": seed, "--config": config_file, "--resume": resume}
        for flag, value in settings.items():
            if value is not None:
                args += [flag, str(value)]
        if overwrite:
            args.append("--overwrite")

        def update(progress: TrainingProgress, event: dict | None) -> None:
            if event is not None and isinstance(event.get("preview"), str):
                if run.preview_node is None:
                    run.preview_node = self.scene.AddNewNodeByClass(
                        SCALAR_VOLUME, f"{out_path.name} preview")
                    run.preview_node.CreateDefaultDisplayNodes()
                read_node_file(event["preview"], run.preview_node)
            if on_update:
                on_update(progress, event)

        run = TrainingRun(args, runner, update)  # callbacks come later, from the main loop
        run.preview_node = preview_node
        return run

    def _files(self, items: Sequence, folder: Path, role: str, what: str,
               references: Sequence = ()) -> list[str]:
        """Paths for ``items``: a path stays, a node is written into ``folder``."""
        paths = []
        for index, item in enumerate(items):
            if isinstance(item, str | Path):
                paths.append(str(item))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in item.GetName())
            reference = references[index] if index < len(references) else None
            if reference is not None and isinstance(reference, str | Path):
                reference = None  # a segmentation needs a volume node for its grid
            paths.append(write_node_file(item, str(folder / f"{role}_{index:02d}_{safe}.nrrd"),
                                         reference=reference, role=what))
        return paths
