import pytest
import torch
from torch import nn

from napari_medgan.core.nets.blocked_conv import BlockedConv3d
from napari_medgan.core.nets.dcgan import DCGANDiscriminator3D
from napari_medgan.core.nets.patchgan import PatchGAN3D


def _pair(in_channels: int) -> tuple[nn.Conv3d, BlockedConv3d]:
    torch.manual_seed(in_channels)
    plain = nn.Conv3d(in_channels, 5, 4, stride=2, padding=1).double()
    blocked = BlockedConv3d(in_channels, 5).double()
    blocked.load_state_dict(plain.state_dict())  # the same state dict: old checkpoints load
    return plain, blocked


def _r1_and_grads(conv: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output, the input's gradient and, through an R1-style double backward, the
    weight and bias gradients: every derivative a critic's input layer takes in training."""
    x = x.clone().requires_grad_()
    out = conv(x)
    (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    penalty = grad_x.square().sum() + out.sum()
    grad_w, grad_b = torch.autograd.grad(penalty, [conv.weight, conv.bias])
    return [out, grad_x, grad_w, grad_b]


@pytest.mark.parametrize("in_channels", [1, 2, 3])
@pytest.mark.parametrize("shape", [(8, 8, 8), (6, 10, 4), (7, 8, 9)])
def test_blocked_convolution_is_the_strided_convolution_with_its_derivatives(in_channels, shape):
    plain, blocked = _pair(in_channels)
    x = torch.randn(2, in_channels, *shape, dtype=torch.float64)
    for ours, theirs in zip(_r1_and_grads(blocked, x), _r1_and_grads(plain, x), strict=True):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_blocked_convolution_under_bf16_autocast_matches_float32():
    plain, blocked = (conv.float() for conv in _pair(1))
    x = torch.randn(2, 1, 16, 16, 16).contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = blocked(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), plain(x), rtol=0.05, atol=0.02)


def test_the_critics_input_layers_are_blocked_and_keep_their_parameters():
    d = DCGANDiscriminator3D(patch_size=16, channels=4, max_channels=8)
    local = PatchGAN3D(in_channels=1, channels=4, layers=2)
    for first in (d.net[0], local.net[0]):
        assert type(first) is BlockedConv3d
        assert first.weight.shape[2:] == (4, 4, 4) and first.stride == (2, 2, 2)
    assert sum(type(m) is BlockedConv3d for m in d.modules()) == 1  # wider layers: plain
