"""Fixtures of the command-line tests."""

import pytest


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    """A config file for a tiny synthesis model (the task tests override it with theirs)."""
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text("model: {latent_dim: 8, g_channels: 4, d_channels: 4, max_channels: 16}\n"
                    "train: {preview_every: 2, checkpoint_every: 2}\n")
    return path
