"""INR-GAN: FMM, the multi-scale INR on any grid (super-resolution, extrapolation), the gradient isolation of the
single-backward GAN step, R1, and `nfields train inr-gan` end to end with resume and bad input."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nfields.cli.main as cli_main
from nfields.cli import train_inr_gan as cli_inr_gan
from nfields.generative.inr_gan import (FMMLinear, InrGan, InrGanConfig, fmm_weights, gan_losses, grid_points,
                                        multiscale_layout, r1_penalty)

TINY = InrGanConfig(latent=16, style=16, width=32, min_width=16, random_features=8, d_width=8, d_max_width=16)


def test_fmm_is_the_formula_with_unit_rows():
    torch.manual_seed(0)
    shared, a, b = torch.randn(6, 5), torch.randn(3, 6, 10), torch.randn(3, 10, 5)
    weights = fmm_weights(shared, a, b)
    for i in range(3):
        expected = shared * (a[i] @ b[i] / math.sqrt(10) + 1)
        expected = expected / expected.norm(dim=1, keepdim=True)
        torch.testing.assert_close(weights[i], expected)
    torch.testing.assert_close(weights.norm(dim=2), torch.ones(3, 6))
    # The layer applies those weights per sample, then bias and the gained leaky ReLU.
    layer = FMMLinear(5, 6, style=4, rank=10)
    x, w = torch.randn(3, 7, 5), torch.randn(3, 4)
    manual = torch.stack([x[i] @ layer.weights(w)[i].t() for i in range(3)]) + layer.bias
    torch.testing.assert_close(layer(x, w), F.leaky_relu(manual, 0.2) * math.sqrt(2))


def test_layout_is_nearest_upsampling_on_the_training_grid():
    lattices = [(4, 4), (8, 8), (16, 16)]
    layout = multiscale_layout(grid_points(16, 16, (16, 16)), lattices)
    assert [p.shape[0] for p in layout.points] == [16, 64, 256]
    values = torch.arange(16.0)  # one value per level-0 cell, row-major over the 4x4 lattice
    order = layout.points[0]  # cell centres of level 0 in the layout's order
    rank = ((order[:, 0] + 1) * 2 - 0.5).round().long() * 4 + ((order[:, 1] + 1) * 2 - 0.5).round().long()
    level1 = values[rank][layout.parent[1]]
    level2 = level1[layout.parent[2]].view(16, 16)
    expected = F.interpolate(values.view(1, 1, 4, 4), scale_factor=4, mode="nearest")[0, 0]
    torch.testing.assert_close(level2, expected)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return InrGan(TINY, (32, 32), 3).generator.eval()


def test_a_sample_renders_consistently_at_twice_the_resolution(generator):
    z = torch.randn(2, TINY.latent)
    with torch.no_grad():
        once, twice = generator(z), generator(z, (64, 64))
    assert once.shape == (2, 32, 32, 3) and twice.shape == (2, 64, 64, 3)
    down = F.avg_pool2d(twice.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    error = (down - once).abs().mean()
    between_samples = (once[0] - once[1]).abs().mean()
    assert error < 0.1 * between_samples, (float(error), float(between_samples))


def test_a_sample_extends_beyond_the_frame(generator):
    z = torch.randn(2, TINY.latent)
    with torch.no_grad():
        frame = generator(z)
        wide = generator(z, (64, 64), region=(-16, -16, 48, 48))  # 50% more on each side, same pixel size
        far = generator(z, torch.tensor([[2.5, -3.0], [-1.7, 1.9], [0.0, 0.0]]))
    torch.testing.assert_close(wide[:, 16:48, 16:48], frame)  # the frame itself is unchanged
    outside = torch.cat([wide[:, :16].flatten(1), wide[:, 48:].flatten(1)], 1)
    assert torch.isfinite(outside).all() and outside.std() > 0.05 and torch.isfinite(far).all()
    assert far.shape == (2, 3, 3)


def test_gradients_are_isolated_between_the_players():
    torch.manual_seed(0)
    model = InrGan(TINY, (16, 16), 1)
    terms = gan_losses(model, torch.rand(4, 1, 16, 16) * 2 - 1, torch.randn(4, TINY.latent), r1_weight=3.0)
    g_params, d_params = list(model.generator.parameters()), list(model.discriminator.parameters())

    def grads(loss, params):
        return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)

    def total(gs):
        return sum(float(g.abs().sum()) for g in gs if g is not None)

    assert total(grads(terms["d_loss"], g_params)) == 0 and total(grads(terms["d_loss"], d_params)) > 0
    assert total(grads(terms["g_loss"], d_params)) == 0 and total(grads(terms["g_loss"], g_params)) > 0
    assert total(grads(terms["r1"], g_params)) == 0 and total(grads(terms["r1"], d_params)) > 0
    torch.testing.assert_close(terms["total"], terms["d_loss"] + terms["g_loss"] + 3.0 * terms["r1"])
    assert all(not p.requires_grad for p in model.generator_ema.parameters())


def test_r1_matches_a_hand_computation():
    a = torch.tensor(0.7)
    reals = torch.randn(3, 2, 4, 4, requires_grad=True)
    logits = (a * reals.square()).flatten(1).sum(1)  # D(x) = a |x|^2: grad 2 a x
    expected = (2 * a * reals.detach()).square().flatten(1).sum(1).mean()
    torch.testing.assert_close(r1_penalty(logits, reals), expected)


# -- the command -----------------------------------------------------------------------------------------------

FAST = ["--dataset", "fashion-mnist", "--limit", "32", "--size", "8", "--batch", "8", "--device", "cpu", "--quiet",
        "-o", "latent=16", "-o", "style=16", "-o", "width=16", "-o", "min_width=8", "-o", "random_features=4",
        "-o", "d_width=8", "-o", "d_max_width=16"]


@pytest.fixture
def nfields(monkeypatch, capsys):
    """`nfields train inr-gan ...` through the real entry point, with the sub-command added if main.py lacks it."""
    build = cli_main.build_parser

    def with_inr_gan() -> argparse.ArgumentParser:
        parser = build()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        jobs = next(a for a in commands.choices["train"]._actions if isinstance(a, argparse._SubParsersAction))
        if "inr-gan" not in jobs.choices:
            cli_inr_gan.add_parser(jobs)
        return parser

    monkeypatch.setattr(cli_main, "build_parser", with_inr_gan)

    def run(*argv):
        capsys.readouterr()
        code = cli_main.main(["train", "inr-gan", *map(str, argv)])
        return code, capsys.readouterr()

    return run


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(),
                    reason="needs Debian dataset-fashion-mnist (CI installs it)")
def test_train_resume_and_sample(nfields, tmp_path):
    from nfields.jobs.train_inr_gan import interpolate, load_inr_gan_run, sample_images

    out = tmp_path / "run"
    code, printed = nfields(*FAST, "--max-steps", "4", "--checkpoint-every", "2", "--out", out)
    assert code == 0, printed.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and np.isfinite(metrics["final_d_loss"]) and metrics["generator_params"] > 0
    assert metrics["r1_gamma"] == pytest.approx(0.0002 * 64 / 8)
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "train-inr-gan" and config["format"] == 1
    for picture in ("samples.png", "superres.png", "extrapolation.png", "interpolation.png", "curve.png"):
        assert (out / picture).stat().st_size > 200
    code, printed = nfields(*FAST, "--max-steps", "6", "--out", out, "--resume")
    assert code == 0, printed.err
    assert json.loads((out / "metrics.json").read_text())["trained_steps"] == 2

    run = load_inr_gan_run(out, "cpu")
    images = sample_images(run, 3, seed=5, height=16, width=16)
    assert images.shape == (3, 16, 16, 1) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_allclose(sample_images(run, 1, seed=6, height=16, width=16)[0], images[1], atol=1e-5)
    strip = interpolate(run, 5, 6, steps=4)
    assert strip.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(strip[0], sample_images(run, 1, seed=5)[0], atol=1e-5)


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "no-such-set"], "unknown dataset"),
    (["--dataset", "fashion-mnist", "--batch", "0"], "--batch must be a positive"),
])
def test_bad_input_is_one_sentence(nfields, tmp_path, argv, words):
    out = tmp_path / "bad"
    code, printed = nfields(*argv, "--out", out, "--device", "cpu", "--quiet")
    lines = printed.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], printed.err
    assert not out.exists()
