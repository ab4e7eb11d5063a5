"""api.task_inputs: what each task trains on, so faces show only the pickers it needs."""

from __future__ import annotations

from napari_medgan.core import api


def test_each_task_asks_for_its_own_partners():
    required = {task: [i.role for i in api.task_inputs(task) if i.required]
                for task in api.available_tasks()}
    assert required["synthesis"] == ["image"]
    assert required["translation"] == ["image", "target"]
    assert required["cycle"] == ["image", "target"]
    assert required["segmentation"] == ["image", "labels"]
    assert required["inpainting"] == ["image"]
    for task in api.available_tasks():  # a mask is always optional and its meaning is said
        (mask,) = [i for i in api.task_inputs(task) if i.role == "mask"]
        assert not mask.required and mask.meaning
    holes = [i.meaning for i in api.task_inputs("inpainting") if i.role == "mask"][0]
    assert "hole" in holes
