"""`nfields generate`, `interpolate` between samples and `eval --fid` on generative runs (a diffusion prior over
a tiny stage-1 run, and a tiny INR-GAN), and their bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nfields.cli.main import main
from nfields.metrics import generative as metrics

TINY_MLP = ["-o", "width=32", "-o", "groups=4", "-o", "blocks=2", "-o", "time_channels=16"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nfields: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    stage1, prior, gan = root / "s1", root / "prior", root / "gan"
    assert main(["train", "ginr", "--dataset", "emoji", "--limit", "16", "--size", "16", "--method", "autodecoder",
                 "-o", "latent_dim=8", "-o", "hidden_width=16", "-o", "hidden_layers=2", "--max-steps", "10",
                 "--batch", "8", "--eval-limit", "2", "--device", "cpu", "--quiet", "--out", str(stage1)]) == 0
    assert main(["train", "diffusion", "--latents", str(stage1), "--steps", "6", *TINY_MLP, "--batch", "8",
                 "--sampling-steps", "5", "--device", "cpu", "--quiet", "--out", str(prior)]) == 0
    assert main(["train", "inr-gan", "--dataset", "emoji", "--size", "8", "--limit", "16", "--max-steps", "2",
                 "--batch", "4", "-o", "width=16", "-o", "min_width=8", "-o", "latent=8", "-o", "style=8",
                 "-o", "d_width=8", "-o", "d_max_width=16", "--device", "cpu", "--quiet", "--out", str(gan)]) == 0
    return {"root": root, "stage1": stage1, "prior": prior, "gan": gan}


@pytest.mark.parametrize("kind, size", [("prior", 16), ("gan", 8)])
def test_generate_writes_samples_that_a_seed_reproduces_and_render_at_any_scale(runs, kind, size, capsys):
    out = runs["root"] / f"samples-{kind}"
    assert main(["generate", str(runs[kind]), "--n", "5", "--seed", "3", "--out", str(out), "--device", "cpu"]) == 0
    with np.load(out / "samples.npz") as data:
        first = data["samples"]
    assert first.shape == (5, size, size, 3) and first.dtype == np.uint8
    assert (out / "samples.png").stat().st_size > 0
    assert main(["generate", str(runs[kind]), "--n", "5", "--seed", "3", "--out", str(out), "--device", "cpu"]) == 0
    with np.load(out / "samples.npz") as data:
        assert np.array_equal(data["samples"], first)
    assert main(["generate", str(runs[kind]), "--n", "2", "--seed", "4", "--scale", "2", "--out", str(out),
                 "--device", "cpu"]) == 0
    with np.load(out / "samples.npz") as data:
        assert data["samples"].shape == (2, 2 * size, 2 * size, 3)
    assert "wrote 2 samples" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["prior", "gan"])
def test_interpolate_between_two_samples_ends_on_them(runs, kind, tmp_path):
    from nfields.jobs.generate import load_generative_run, render_latents, sample_latents

    out = tmp_path / "strip.png"
    assert main(["interpolate", str(runs[kind]), "0", "1", "--steps", "4", "--out", str(out), "--device", "cpu"]) == 0
    assert out.stat().st_size > 0
    gen = load_generative_run(runs[kind], "cpu")
    ends = [sample_latents(gen, 1, seed) for seed in (0, 1)]
    import torch

    t = torch.linspace(0, 1, 4).view(-1, *[1] * (ends[0].dim() - 1))
    frames = render_latents(gen, ends[0] + t * (ends[1] - ends[0]))
    assert np.allclose(frames[0], render_latents(gen, ends[0])[0], atol=1e-5)
    assert np.allclose(frames[-1], render_latents(gen, ends[1])[0], atol=1e-5)
    assert not np.allclose(frames[1], frames[0])


def test_eval_fid_scores_samples_and_states_the_cost(runs, monkeypatch, capsys):
    monkeypatch.setattr(metrics, "MIN_FID_SAMPLES", 6)  # Inception on CPU is slow; the real floor is tested below
    assert main(["eval", str(runs["prior"]), "--fid", "--n", "6", "--reference-limit", "6", "--device", "cpu"]) == 0
    report = json.loads((runs["prior"] / "eval_generation.json").read_text())
    assert report["fid"] > 0 and 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1
    assert report["reference_images"] == 6 and report["samples"] == 6
    assert report["learnable_parameters"] > report["inference_parameters"] > 0
    assert report["gflops_per_sample"] > 0 and report["samples_per_second"] > 0
    assert "stage1" in report and "FID" in capsys.readouterr().out


def test_bad_input_gets_one_sentence(runs, tmp_path, capsys):
    assert main(["generate", str(runs["stage1"]), "--n", "4", "--out", str(tmp_path / "x")]) == 2
    assert "train diffusion --latents" in error_line(capsys)
    assert main(["generate", str(tmp_path / "missing"), "--n", "4", "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in error_line(capsys)
    assert main(["generate", str(runs["prior"]), "--n", "0", "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    assert "at least 1" in error_line(capsys)
    assert main(["generate", str(runs["gan"]), "--n", "2", "--guidance", "2", "--out", str(tmp_path / "x"),
                 "--device", "cpu"]) == 2
    assert "class-conditional" in error_line(capsys)
    assert main(["eval", str(runs["prior"]), "--fid", "--n", "100", "--device", "cpu"]) == 2
    assert f"at least {metrics.MIN_FID_SAMPLES}" in error_line(capsys)
    assert not (tmp_path / "x").exists()


def test_voxel_prior_generates_meshes_and_is_scored_by_coverage_and_mmd(tmp_path, monkeypatch, capsys):
    import nfields.data.voxels as voxels

    def boxes(split: str = "train", resolution: int = 64, limit: int = 0):
        count = limit or (8 if split == "train" else 4)
        grids = np.zeros((count, resolution, resolution, resolution), np.uint8)
        for i in range(count):  # boxes of growing size, centred
            lo, hi = resolution // 2 - 1 - i % 3, resolution // 2 + 1 + i % 3
            grids[i, lo:hi, lo:hi, lo:hi] = 1
        return voxels.VoxelSet(__import__("torch").as_tensor(grids), [f"{i:03d}" for i in range(count)], split)

    monkeypatch.setattr(voxels, "load_voxels", boxes)
    stage1, prior, out = tmp_path / "s1", tmp_path / "prior", tmp_path / "shapes"
    assert main(["train", "mnif", "--dataset", "voxels", "--resolution", "12", "--batch", "4", "--max-steps", "3",
                 "-o", "experts=4", "-o", "width=16", "-o", "hidden_layers=1", "-o", "latent_dim=8",
                 "--device", "cpu", "--quiet", "--out", str(stage1)]) == 0
    assert main(["train", "diffusion", "--latents", str(stage1), "--steps", "4", *TINY_MLP, "--batch", "4",
                 "--sampling-steps", "4", "--device", "cpu", "--quiet", "--out", str(prior)]) == 0
    assert main(["generate", str(prior), "--n", "3", "--out", str(out), "--device", "cpu"]) == 0
    with np.load(out / "samples.npz") as data:
        assert data["samples"].shape == (3, 12, 12, 12, 1)
    assert (out / "samples.png").stat().st_size > 0
    # Samples that are the test shapes themselves cover every one of them at distance 0.
    test = boxes("test", 12)
    twins = tmp_path / "twins.npz"
    np.savez(twins, samples=(test.occupancy.numpy()[..., None] * 255).astype(np.uint8))
    assert main(["eval", str(prior), "--fid", "--samples", str(twins), "--device", "cpu"]) == 0
    report = json.loads((prior / "eval_generation.json").read_text())
    assert report["coverage"] == 1.0 and report["mmd"] < 1e-6 and report["reference_shapes"] == 4
    assert "coverage 1.000" in capsys.readouterr().out
