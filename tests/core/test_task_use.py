"""What a face learns about a model from its card's task, before loading any weights."""

import pytest
import torch

from napari_medgan.core import api
from napari_medgan.core.errors import ConfigError


def test_each_task_says_how_its_models_are_used():
    uses = {task: api.task_use(task) for task in api.available_tasks()}
    assert [t for t, u in uses.items() if u.synthesizes] == ["synthesis"]
    assert not uses["synthesis"].applies
    assert uses["inpainting"].apply_inputs == ("image", "mask")
    assert uses["segmentation"].output == "labels" and uses["anomaly"].output == "map"
    assert [t for t, u in uses.items() if u.reversible] == ["cycle"]
    with pytest.raises(ConfigError):
        api.task_use("denoising")


def test_anomaly_score_is_the_mean_of_the_top_one_percent():
    values = torch.zeros(1, 10, 10, 10)
    values.view(-1)[:10] = torch.arange(10.0)  # the top 1 % are exactly these 10 voxels
    assert api.anomaly_score(api.Volume(values, torch.eye(4).numpy())) == pytest.approx(4.5)
