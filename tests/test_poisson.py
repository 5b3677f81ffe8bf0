"""Poisson reconstruction: derivative targets in coordinate units, autograd derivatives, recovery."""

import json

import numpy as np
import pytest
import torch

import nfields
from nfields.data.derivatives import field_gradient, field_laplacian, image_gradient, image_laplacian
from nfields.data.grid import pixel_grid


@pytest.mark.parametrize("convention", ["centers", "endpoints"])
def test_image_derivatives_are_in_coordinate_units(convention):
    n = 40
    grid = pixel_grid(n, n, convention).numpy()  # (y, x)
    y, x = grid[..., 0], grid[..., 1]
    ramp = (0.3 * x - 0.2 * y)[..., None]
    gradient = image_gradient(ramp, convention).reshape(n, n, 1, 2)[2:-2, 2:-2, 0]  # away from the border
    assert np.allclose(gradient[..., 0], -0.2, atol=1e-4) and np.allclose(gradient[..., 1], 0.3, atol=1e-4)
    bowl = (x**2 + 2 * y**2)[..., None]  # Laplacian 2 + 4
    laplacian = image_laplacian(bowl, convention).reshape(n, n)[2:-2, 2:-2]
    assert np.allclose(laplacian, 6.0, atol=1e-3)


def test_field_derivatives_match_the_closed_form():
    coords = torch.rand(64, 2, dtype=torch.float64, requires_grad=True)
    outputs = torch.stack([coords[:, 0] ** 2 * coords[:, 1], torch.sin(coords[:, 1])], dim=1)
    gradient = field_gradient(outputs, coords)
    y, x = coords[:, 0].detach(), coords[:, 1].detach()
    assert torch.allclose(gradient[:, 0], torch.stack([2 * y * x, y**2], 1))
    assert torch.allclose(gradient[:, 1], torch.stack([torch.zeros_like(x), torch.cos(x)], 1))
    laplacian = field_laplacian(gradient, coords)
    assert torch.allclose(laplacian[:, 0], 2 * x) and torch.allclose(laplacian[:, 1], -torch.sin(x))


def test_gradient_supervision_recovers_the_image():
    image = nfields.load_image("camera", size=(48,))
    field = nfields.make_field("siren", 2, 1, width=64)
    fitted, _ = nfields.fit_image(image, field, steps=300, device="cpu", progress=False, supervise="gradient",
                                  coords="endpoints")
    assert fitted.metrics["psnr"] > 26.0  # measured 29.4 dB (seeds 0 and 1)
    assert fitted.offset is not None
    # The offset makes the rendering match the image's mean.
    assert abs(fitted.render().mean() - image.values.mean()) < 0.01


def test_laplacian_supervision_from_the_command_line(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("fit", "image", "camera", "--size", "24", "--steps", "40", "--supervise", "laplacian",
                 "--out", out, "--quiet", "--device", "cpu", "-o", "width=32")
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["supervise"] == "laplacian" and len(metrics["value_offset"]) == 1
    assert (out / "comparison.png").exists()
    # render uses the stored constant of integration
    assert cli("render", out, "--scale", "1", "--out", tmp_path / "r.png").code == 0


def test_supervision_and_inpainting_do_not_mix(cli, tmp_path):
    result = cli("fit", "image", "camera", "--size", "16", "--steps", "5", "--supervise", "gradient",
                 "--keep-fraction", "0.5", "--out", tmp_path / "run", "--quiet")
    assert result.code == 2 and "needs --supervise values" in result.err
    assert not (tmp_path / "run").exists()
    result = cli("fit", "image", "camera", "--size", "16", "--steps", "5", "--supervise", "hessian",
                 "--out", tmp_path / "run", "--quiet")
    assert result.code == 2 and "unknown --supervise" in result.err
