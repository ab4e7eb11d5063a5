import pytest
import torch

from napari_medgan.core.memory import _PeakBytes
from napari_medgan.core.nets.dcgan import DCGANDiscriminator3D, DCGANGenerator3D
from napari_medgan.core.nets.ema import recalibrate_batchnorm, update_ema
from napari_medgan.core.nets.unet import UNet3D


@pytest.mark.parametrize("patch", [8, 16, 32, 64])
@pytest.mark.parametrize("upsample", ["transpose", "resize", "trilinear"])
def test_generator_makes_patches_of_the_asked_size_in_range(patch, upsample):
    torch.manual_seed(0)
    g = DCGANGenerator3D(
        latent_dim=8, patch_size=patch, channels=2, max_channels=8, upsample=upsample
    )
    out = g(torch.randn(3, 8))
    assert out.shape == (3, 1, patch, patch, patch)
    assert out.abs().max() <= 1.0
    assert out.std() > 0  # not a constant output


@pytest.mark.parametrize(("upsample", "mode"), [("resize", "nearest"), ("trilinear", "trilinear")])
def test_resize_upsampling_uses_no_transposed_convolution_after_the_projection(upsample, mode):
    g = DCGANGenerator3D(latent_dim=8, patch_size=32, channels=2, upsample=upsample)
    kinds = [type(m).__name__ for m in g.upsample.modules()]
    assert "ConvTranspose3d" not in kinds
    assert [m.mode for m in g.upsample.modules() if isinstance(m, torch.nn.Upsample)] == [mode] * 3


def test_generator_of_128_patches_builds_with_small_widths():
    g = DCGANGenerator3D(latent_dim=4, patch_size=128, channels=1, max_channels=4)
    assert g(torch.randn(1, 4)).shape == (1, 1, 128, 128, 128)


@pytest.mark.parametrize("patch", [8, 16, 32])
def test_discriminator_gives_one_logit_per_patch(patch):
    d = DCGANDiscriminator3D(patch_size=patch, channels=2, max_channels=8)
    assert d(torch.randn(5, 1, patch, patch, patch)).shape == (5,)


@pytest.mark.parametrize(("norm", "count"), [("batch", 2), ("none", 0)])
def test_discriminator_normalisation_spares_the_input_layer(norm, count):
    d = DCGANDiscriminator3D(patch_size=32, channels=2, norm=norm)
    kinds = [type(m).__name__ for m in d.net]
    assert kinds.count("BatchNorm3d") == count
    assert isinstance(d.net[0], torch.nn.Conv3d) and kinds[1] == "LeakyReLU"


def test_spectral_norm_bounds_the_discriminator_weights():
    torch.manual_seed(0)
    d = DCGANDiscriminator3D(patch_size=16, channels=4, spectral_norm=True)
    with torch.no_grad():
        for conv in d.net:
            if hasattr(conv, "parametrizations"):
                conv.parametrizations.weight.original.mul_(50)
        for _ in range(30):  # power iterations converge in training mode
            d(torch.randn(2, 1, 16, 16, 16))
    for conv in d.net:
        if hasattr(conv, "parametrizations"):
            sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
            assert sigma < 1.1


def test_ema_warms_up_then_follows_slowly():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        a.weight.zero_()
        b.weight.fill_(1.0)
    update_ema(a, b, decay=0.999, step=0)  # rate 0.1 at the first step
    assert torch.allclose(a.weight, torch.full_like(a.weight, 0.9))
    update_ema(a, b, decay=0.5, step=10_000)
    assert torch.allclose(a.weight, torch.full_like(a.weight, 0.95))


def test_recalibration_fits_batchnorm_statistics_to_the_net_it_serves():
    torch.manual_seed(0)
    g = DCGANGenerator3D(latent_dim=8, patch_size=16, channels=4, max_channels=16)
    for m in g.modules():  # statistics inherited from another net, as an EMA copy has
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(0.1)
    z = torch.randn(64, 8)
    with torch.no_grad():
        batch_mode = g.train()(z)
        assert (g.eval()(z) - batch_mode).abs().mean() > 0.05  # output std is ~0.13
        recalibrate_batchnorm(
            g, lambda i: torch.randn(64, 8, generator=torch.Generator().manual_seed(i))
        )
        assert not g.training
        assert (g(z) - batch_mode).abs().mean() < 0.01
    assert all(m.momentum == 0.1 for m in g.modules() if isinstance(m, torch.nn.BatchNorm3d))


def _step(net, x):
    """Output, input gradient and weight gradients of one backward pass through ``net``."""
    x = x.clone().requires_grad_(True)
    net.zero_grad(set_to_none=True)
    out = net(x)
    (out.float() ** 2).mean().backward()
    return out.detach(), x.grad, [p.grad.clone() for p in net.parameters()]


def _peak_bytes(net, x):
    with _PeakBytes() as counter:
        _step(net, x)
    return counter.peak


@pytest.mark.parametrize("kind", ["unet", "dcgan"])
def test_activation_checkpointing_gives_the_same_step_in_less_memory(kind):
    """Same outputs, gradients and BatchNorm statistics; fewer bytes at the step's peak."""
    torch.manual_seed(0)
    if kind == "unet":
        make = lambda on: UNet3D(1, 1, (4, 8, 16), checkpointing=on)  # noqa: E731
        x = torch.randn(2, 1, 16, 16, 16)
    else:  # D(G(z)), as in a generator step
        make = lambda on: torch.nn.Sequential(  # noqa: E731
            DCGANGenerator3D(8, 1, 32, 4, 16, checkpointing=on),
            DCGANDiscriminator3D(1, 32, 4, 16, checkpointing=on))
        x = torch.randn(2, 8)
    plain, checkpointed = make(False), make(True)
    checkpointed.load_state_dict(plain.state_dict())
    for got, want in zip(_step(checkpointed, x), _step(plain, x), strict=True):
        for a, b in zip(got if isinstance(got, list) else [got],
                        want if isinstance(want, list) else [want], strict=True):
            torch.testing.assert_close(a, b)
    for a, b in zip(checkpointed.buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b)  # recomputation didn't count the batch twice
    # The U-Net keeps two blocks at full resolution, so recomputing them pays; a DCGAN
    # net's peak is its finest level, recomputed in backward anyway (bench/README.md).
    assert _peak_bytes(checkpointed, x) < (0.8 if kind == "unet" else 1.0) * _peak_bytes(plain, x)


def test_a_checkpointed_critic_takes_the_gradient_penalty():
    """WGAN-GP differentiates through D's input gradient: checkpointing must allow it."""
    from napari_medgan.core.losses import gradient_penalty

    torch.manual_seed(0)
    plain = DCGANDiscriminator3D(1, 16, 4, 16, norm="none")
    checkpointed = DCGANDiscriminator3D(1, 16, 4, 16, norm="none", checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    real, fake = torch.randn(2, 1, 16, 16, 16), torch.randn(2, 1, 16, 16, 16)
    grads = []
    for net in (plain, checkpointed):
        gradient_penalty(net, real, fake, torch.Generator().manual_seed(1)).backward()
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_patchgan_gradients_stay_finite_under_bf16_autocast():
    """Its one-channel head runs in float32: in bf16 on the CPU (oneDNN) its weight gradient
    came out non-finite in 7 of 300 identical runs."""
    from napari_medgan.core.nets.patchgan import PatchGAN3D

    layout = torch.channels_last_3d
    for _ in range(100):
        torch.manual_seed(0)
        net = PatchGAN3D(1, 4, layers=2).to(memory_format=layout)
        x = (torch.rand(2, 1, 16, 16, 16) * 2 - 1).contiguous(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        assert logits.dtype == torch.float32
        logits.mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
