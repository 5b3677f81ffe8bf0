"""mNIF: a mixture of SIREN weights conditioned on a latent."""

import pytest
import torch

from nfields.generative import MNIF_SIZES, MixtureSiren, MNIFConfig

SMALL = MNIFConfig(experts=4, width=16, hidden_layers=2, latent_dim=8)


def plain_siren(x, weights, biases, w0=30.0, output_sine=True):
    """SIREN by hand: x -> sin(w0 (x W + b)) per layer, first layer included."""
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = x @ w + b
        if i < len(weights) - 1 or output_sine:
            x = torch.sin(w0 * x)
    return x


def test_shapes():
    torch.manual_seed(0)
    model = MixtureSiren(2, 3, SMALL)
    out = model(torch.rand(5, 7, 2) * 2 - 1, torch.randn(5, 8))
    assert out.shape == (5, 7, 3)
    assert model.num_layers == SMALL.hidden_layers + 2
    assert model.weights[0].shape == (4, 2, 16)
    assert model.weights[-1].shape == (4, 16, 3)
    assert model.biases[1].shape == (4, 16)
    assert model.coefficients.out_features == 4 * model.num_layers
    assert torch.allclose(model.coefficients.bias, torch.full_like(model.coefficients.bias, 0.25))


def test_init_bounds():
    torch.manual_seed(0)
    model = MixtureSiren(2, 3, SMALL)
    assert model.weights[0].abs().max() <= 1 / 2
    bound = (6 / 16) ** 0.5 / 30
    for w in model.weights[1:]:
        assert w.abs().max() <= bound
    # experts are drawn independently
    assert not torch.equal(model.weights[1][0], model.weights[1][1])


@pytest.mark.parametrize("output_sine", [True, False])
def test_single_expert_is_plain_siren(output_sine):
    torch.manual_seed(0)
    cfg = MNIFConfig(experts=1, width=16, hidden_layers=2, latent_dim=8, output_sine=output_sine)
    model = MixtureSiren(3, 2, cfg)
    with torch.no_grad():
        model.coefficients.weight.zero_()
        model.coefficients.bias.fill_(1.0)
    x = torch.rand(3, 11, 3) * 2 - 1
    out = model(x, torch.randn(3, 8))
    ref = plain_siren(x, [w[0] for w in model.weights], [b[0] for b in model.biases],
                      output_sine=output_sine)
    torch.testing.assert_close(out, ref)


def test_mixing_is_linear_in_coefficients():
    torch.manual_seed(0)
    model = MixtureSiren(2, 3, SMALL)
    z1, z2 = torch.randn(1, 8), torch.randn(1, 8)
    # the coefficient map is affine, so the midpoint latent gives the mean coefficients
    zm = (z1 + z2) / 2
    c1, c2, cm = (model.mixture_coefficients(z) for z in (z1, z2, zm))
    torch.testing.assert_close(cm, (c1 + c2) / 2)
    p1, p2, pm = (model.mixed_parameters(z) for z in (z1, z2, zm))
    for (w1, b1), (w2, b2), (wm, bm) in zip(p1, p2, pm):
        torch.testing.assert_close(wm, (w1 + w2) / 2)
        torch.testing.assert_close(bm, (b1 + b2) / 2)
    # weights are averaged, not outputs: a zero latent gives the mean expert
    zero = model.mixed_parameters(torch.zeros(1, 8))
    for (w, b), ew, eb in zip(zero, model.weights, model.biases):
        torch.testing.assert_close(w[0], ew.mean(0))
        torch.testing.assert_close(b[0], eb.mean(0))


def test_per_instance_mixing_matches_plain_siren():
    torch.manual_seed(0)
    model = MixtureSiren(2, 3, SMALL)
    x, z = torch.rand(2, 6, 2) * 2 - 1, torch.randn(2, 8)
    out = model(x, z)
    coeff = model.mixture_coefficients(z)
    for i in range(2):
        ws = [torch.einsum("m,mio->io", coeff[i, :, k], w) for k, w in enumerate(model.weights)]
        bs = [torch.einsum("m,mo->o", coeff[i, :, k], b) for k, b in enumerate(model.biases)]
        torch.testing.assert_close(out[i], plain_siren(x[i], ws, bs))


def test_gradients_reach_every_expert():
    torch.manual_seed(0)
    model = MixtureSiren(2, 3, SMALL)
    z = torch.randn(4, 8, requires_grad=True)
    model(torch.rand(4, 9, 2) * 2 - 1, z).square().mean().backward()
    for p in list(model.weights) + list(model.biases):
        assert p.grad is not None
        assert (p.grad.flatten(1).abs().sum(1) > 0).all()
    assert model.coefficients.weight.grad.abs().sum() > 0
    assert z.grad.abs().sum() > 0


def test_inference_parameters_is_one_siren():
    model = MixtureSiren(2, 3, SMALL)
    sizes = [2, 16, 16, 16, 3]
    plain = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    assert model.inference_parameters() == plain
    assert model.learnable_parameters() == 4 * plain + 8 * 4 * 4 + 4 * 4


def test_presets_build():
    # Measured for in=2, out=3 (RGB image):
    #   S: learnable 5,933,312, inference 17,027
    #   L: learnable 33,378,048, inference 83,331
    s = MixtureSiren(2, 3, MNIF_SIZES["S"])
    assert s.learnable_parameters() == 5_933_312
    assert s.inference_parameters() == 17_027
    large = MixtureSiren(2, 3, MNIF_SIZES["L"])
    assert large.learnable_parameters() == 33_378_048
    assert large.inference_parameters() == 83_331
    out = s(torch.rand(1, 4, 2) * 2 - 1, torch.zeros(1, 1024))
    assert out.shape == (1, 4, 3)
