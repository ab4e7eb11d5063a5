"""Training in the background: a real ``medgan train`` process, followed without Qt."""

import os
import signal

import numpy as np
import psutil
import pytest
import slicer
import torch
from MedGANLib.convert import ijk_to_ras
from MedGANLib.logic import MedGANLogic
from MedGANLib.process import QueueRunner

from napari_medgan.core import api
from napari_medgan.core.errors import DataError, OutputError

from .mrml import OBLIQUE, load_node, node_state, wait_for


@pytest.fixture
def t1_node(scene, real_dir):
    node = load_node(scene, real_dir / "t1_a.nii.gz")
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(OBLIQUE))
    return node


def start(scene, t1_node, out, config, steps, updates=None):
    runner = QueueRunner()
    run = MedGANLogic().train(
        str(out), runner=runner, data=[t1_node], steps=steps, patch=16, batch=2, device="cpu",
        config_file=str(config),
        on_update=None if updates is None else lambda p, e: updates.append((p.step, e)))
    return run, runner


def test_a_run_reports_progress_and_previews_and_leaves_a_checkpoint(
        scene, t1_node, tiny_training_config, tmp_path):
    updates = []
    before = node_state(t1_node)
    run, runner = start(scene, t1_node, tmp_path / "ckpt", tiny_training_config, 6, updates)
    wait_for(run, runner, lambda r: False)
    progress = run.progress
    assert progress.status == "done", progress.message
    assert progress.exit_code == 0 and progress.step == progress.total == 6
    steps = [e for _, e in updates if e and e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5, 6]
    assert set(progress.losses) == {"loss_d", "loss_g"} and progress.steps_per_s > 0
    assert updates[-1][1] is None  # the last call says the run ended
    # the volume node went to the process as a file with its oblique geometry
    written = api.read_volume(tmp_path / "ckpt-data" / "data_00_t1_a.nrrd")
    np.testing.assert_allclose(written.affine, OBLIQUE, atol=1e-6)
    np.testing.assert_array_equal(written.tensor[0].numpy().transpose(2, 1, 0),
                                  slicer.util.arrayFromVolume(t1_node))
    assert node_state(t1_node) == before
    # each preview the process wrote was loaded into one preview node
    preview = run.preview_node
    assert preview is not None and scene.IsNodePresent(preview)
    assert preview.GetImageData().GetDimensions() == (16, 16, 16)
    assert api.load_model(progress.checkpoint).card["step"] == 6
    card = api.load_model(tmp_path / "ckpt").card
    np.testing.assert_allclose(card["spacing"], [0.8, 1.3, 2.1], atol=1e-6)


def test_cancel_stops_the_process_with_a_checkpoint(scene, t1_node, tiny_training_config,
                                                    tmp_path):
    run, runner = start(scene, t1_node, tmp_path / "ckpt", tiny_training_config, 100000)
    wait_for(run, runner, lambda r: r.progress.step >= 2)
    assert run.progress.status == "running"
    run.cancel()
    assert run.progress.status == "stopping"
    wait_for(run, runner, lambda r: False)
    progress = run.progress
    assert progress.status == "stopped", progress.message
    assert progress.exit_code in (0, 3)  # 3: medgan's "stopped on request"
    assert "kept" in progress.message
    step = api.load_model(tmp_path / "ckpt").card["step"]
    assert 2 <= step < 100000 and step == progress.step
    assert not psutil.pid_exists(run.process.pid) or \
        psutil.Process(run.process.pid).status() == psutil.STATUS_ZOMBIE
    # the kept checkpoint goes on where it stopped
    resumed = MedGANLogic().train(str(tmp_path / "ckpt"), runner=runner, data=[t1_node],
                                  resume=str(tmp_path / "ckpt"), steps=step + 2, patch=16,
                                  batch=2, device="cpu")
    wait_for(resumed, runner, lambda r: False)
    assert resumed.progress.status == "done", resumed.progress.message
    assert api.load_model(tmp_path / "ckpt").card["step"] == step + 2


def test_a_killed_process_is_reported_with_its_last_lines(scene, t1_node, tiny_training_config,
                                                          tmp_path):
    run, runner = start(scene, t1_node, tmp_path / "ckpt", tiny_training_config, 100000)
    wait_for(run, runner, lambda r: r.progress.checkpoint is not None)
    os.kill(run.process.pid, signal.SIGKILL)
    wait_for(run, runner, lambda r: False)
    progress = run.progress
    assert progress.status == "failed" and progress.exit_code == -signal.SIGKILL
    assert "killed by signal SIGKILL" in progress.message
    assert progress.checkpoint in progress.message  # where the last good checkpoint is
    api.load_model(progress.checkpoint)  # and it loads


def test_a_user_error_of_the_process_is_its_one_line(scene, tmp_path, tiny_training_config):
    runner = QueueRunner()
    run = MedGANLogic().train(str(tmp_path / "ckpt"), runner=runner,
                              data=[str(tmp_path / "missing.nii.gz")],
                              config_file=str(tiny_training_config))
    wait_for(run, runner, lambda r: False)
    assert run.progress.status == "failed" and run.progress.exit_code == 2
    assert run.progress.message.endswith("missing.nii.gz does not exist; check the path.")


def test_bad_training_input_is_refused_before_any_process(scene, t1_node, tmp_path, real_dir):
    logic, runner = MedGANLogic(), QueueRunner()
    with pytest.raises(DataError, match="No training data"):
        logic.train(str(tmp_path / "a"), runner=runner)
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    slicer.util.updateVolumeFromArray(rgb, np.zeros((8, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="'photo' is a vtkMRMLVectorVolumeNode"):
        logic.train(str(tmp_path / "b"), runner=runner, data=[t1_node, rgb])
    assert not (tmp_path / "b-data").exists()  # nothing written for the good node either
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a medgan checkpoint"):
        logic.train(str(tmp_path / "c"), runner=runner, data=[t1_node], overwrite=True)
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"
    assert ijk_to_ras(t1_node).tolist() == OBLIQUE.tolist()


def test_a_segmentation_node_trains_as_labels_on_its_volumes_grid(
        scene, t1_node, real_dir, tiny_training_config, tmp_path):
    labelmap = load_node(scene, real_dir / "labels_a.nii.gz", "vtkMRMLLabelMapVolumeNode")
    labelmap.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(OBLIQUE))
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "tissue")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(t1_node)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        labelmap, segmentation)
    runner = QueueRunner()
    run = MedGANLogic().train(str(tmp_path / "seg"), runner=runner, task="segmentation",
                              data=[t1_node], labels=[segmentation], steps=2, patch=16,
                              config_file=str(tiny_training_config))
    wait_for(run, runner, lambda r: False)
    assert run.progress.status == "done", run.progress.message
    written = api.read_volume(tmp_path / "seg-data" / "labels_00_tissue.nrrd")
    np.testing.assert_allclose(written.affine, OBLIQUE, atol=1e-6)
    truth = api.read_volume(real_dir / "labels_a.nii.gz").tensor
    assert torch.equal(written.tensor, truth)  # labels 1 and 2 kept their values
    assert api.load_model(tmp_path / "seg").card["num_classes"] == 3
