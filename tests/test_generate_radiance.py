"""mNIF on radiance fields through the commands: `train mnif --dataset scenes:DIR` (and its resume and
`eval`), `train diffusion` over its latent table, `generate` (renders from the fixed views, a grid, orbit
videos), `interpolate` and `eval --fid` against the training objects' images from those views; bad input.
Data: one tiny make-scene set (3 objects, 16 px, 2 test views on the shared circle)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nfields.cli.main import main
from nfields.metrics import generative as metrics

pytest.importorskip("mitsuba")
pytest.importorskip("trimesh")

TINY_FIELD = ["-o", "experts=4", "-o", "width=16", "-o", "latent_dim=8", "-o", "samples=8", "-o", "fit_steps=2",
              "-o", "fit_rays=64"]
TINY_MLP = ["-o", "width=32", "-o", "groups=4", "-o", "blocks=2", "-o", "time_channels=16"]
TEST_VIEWS = 2  # the fixed views


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nfields: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from nfields.data import catalog

    if catalog.ENTRIES["duck"].path() is None:
        pytest.skip("pybullet is not installed")
    root = tmp_path_factory.mktemp("radiance")
    objects, stage1, prior = root / "objects", root / "s1", root / "prior"
    assert main(["make-scene", "--objects", "3", "--views", "3", "--size", "16", "--test-views", str(TEST_VIEWS),
                 "--samples", "4", "--quiet", "--out", str(objects)]) == 0
    assert main(["train", "mnif", "--dataset", f"scenes:{objects}", *TINY_FIELD, "--max-steps", "3", "--batch", "2",
                 "--query-rays", "32", "--device", "cpu", "--quiet", "--out", str(stage1)]) == 0
    assert main(["train", "diffusion", "--latents", str(stage1), "--steps", "4", *TINY_MLP, "--batch", "2",
                 "--sampling-steps", "3", "--device", "cpu", "--quiet", "--out", str(prior)]) == 0
    return {"root": root, "objects": objects, "stage1": stage1, "prior": prior}


def test_train_mnif_on_scenes_writes_a_radiance_run_that_resumes_and_evaluates(runs, tmp_path, capsys):
    stage1 = tmp_path / "s1"  # a copy: the prior checks that its stage-1 run has not moved on
    shutil.copytree(runs["stage1"], stage1)
    config = json.loads((stage1 / "config.json").read_text())
    assert config["field_spec"]["kind"] == "radiance" and config["field_spec"]["objects"] == 2  # object 0 is test
    assert config["query_rays"] == 32 and config["field_spec"]["config"]["latent_dim"] == 8
    written = json.loads((stage1 / "metrics.json").read_text())
    assert written["kind"] == "radiance" and written["steps"] == 3 and written["latent_table"] == 2 * 8
    assert {"views.png", "orbit.png", "curve.png"} <= {p.name for p in stage1.iterdir()}
    assert main(["train", "mnif", "--resume", "--max-steps", "4", "--device", "cpu", "--quiet",
                 "--out", str(stage1)]) == 0
    assert json.loads((stage1 / "metrics.json").read_text())["steps"] == 4
    assert main(["eval", str(stage1), "--device", "cpu"]) == 0
    report = json.loads((stage1 / "eval_test.json").read_text())
    assert np.isfinite(report["psnr"]) and "psnr_test_objects" in report
    assert "PSNR" in capsys.readouterr().out


def test_prior_is_over_the_latent_table(runs):
    from nfields.jobs.train_diffusion import extract_latents, load_diffusion_run

    run = load_diffusion_run(runs["prior"], "cpu")
    assert run.stage1.radiance and tuple(run.prior.latent_shape) == (8,)
    latents, labels = extract_latents(run.stage1, "train")
    assert labels is None and latents.shape == (2, 8)
    assert np.allclose(latents.numpy(), run.stage1.model.latents.detach().numpy())
    assert extract_latents(run.stage1, "test") == (None, None)  # test objects have no row


def test_generate_renders_every_sample_from_the_fixed_views(runs, capsys):
    pytest.importorskip("av")
    out = runs["root"] / "samples"
    assert main(["generate", str(runs["prior"]), "--n", "2", "--seed", "3", "--out", str(out), "--device", "cpu"]) == 0
    with np.load(out / "samples.npz") as data:
        first = data["samples"]
    assert first.shape == (2, TEST_VIEWS, 16, 16, 3) and first.dtype == np.uint8
    assert (out / "samples.png").stat().st_size > 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["sample_000.mp4", "sample_001.mp4"]
    assert "2 orbit videos" in capsys.readouterr().out
    assert main(["generate", str(runs["prior"]), "--n", "2", "--seed", "3", "--scale", "2", "--out", str(out),
                 "--device", "cpu"]) == 0
    with np.load(out / "samples.npz") as data:
        assert data["samples"].shape == (2, TEST_VIEWS, 32, 32, 3)


def test_fixed_views_are_the_shared_test_circle_and_the_reference_is_their_images(runs):
    import torch

    from nfields.data.cameras import orbit_poses
    from nfields.jobs.generate import load_generative_run, reference_set, render_latents, sample_latents

    gen = load_generative_run(runs["prior"], "cpu")
    cameras = gen.run.stage1.cameras
    assert gen.radiance and not gen.voxels and gen.frame == (16, 16)
    assert torch.allclose(cameras.poses, torch.tensor(orbit_poses(TEST_VIEWS), dtype=torch.float32), atol=1e-5)
    reference = reference_set(gen, 0)
    assert reference.shape == (2 * TEST_VIEWS, 16, 16, 3) and reference.dtype == np.uint8
    views = gen.run.stage1.instances("train").views
    assert np.array_equal(reference[:TEST_VIEWS], views.images[0, -TEST_VIEWS:].numpy())
    assert reference_set(gen, 3).shape[0] == 3
    # The batched renderer agrees with one view at a time.
    latents = sample_latents(gen, 2, seed=1)
    renders = render_latents(gen, latents)
    one = gen.run.stage1.model.render_view(latents[1], cameras.poses[1], 16, 16, cameras.focal)[0]
    assert np.allclose(renders[1, 1], one.numpy(), atol=1e-5)
    assert np.allclose(render_latents(gen, latents, views=[1])[:, 0], renders[:, 1], atol=1e-6)


def test_interpolate_renders_one_view_per_step(runs, tmp_path):
    out = tmp_path / "strip.png"
    assert main(["interpolate", str(runs["prior"]), "0", "1", "--steps", "3", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert out.stat().st_size > 0


def test_eval_fid_scores_renders_against_the_fixed_views(runs, monkeypatch, capsys):
    from nfields.jobs import generate

    monkeypatch.setattr(metrics, "MIN_FID_SAMPLES", 4)  # Inception on CPU is slow; the real floor is elsewhere
    monkeypatch.setattr(generate, "RADIANCE_SPEED_BATCH", 4)  # 32 views of 64^2 take ~4 s per call here
    assert main(["eval", str(runs["prior"]), "--fid", "--n", "2", "--device", "cpu"]) == 0
    report = json.loads((runs["prior"] / "eval_generation.json").read_text())
    assert report["samples"] == 2 and report["renders"] == 2 * TEST_VIEWS
    assert report["reference_images"] == 2 * TEST_VIEWS and report["fid"] > 0
    assert 0 <= report["precision"] <= 1 and report["speed_unit"] == "views"
    field = json.loads((runs["stage1"] / "metrics.json").read_text())["inference_params"]
    assert report["inference_parameters"] == field + 8  # one mixed SIREN and its latent
    assert report["learnable_parameters"] > report["inference_parameters"]
    assert report["gflops_per_sample"] > 0 and report["samples_per_second"] > 0
    assert "views/s" in capsys.readouterr().out
    assert main(["eval", str(runs["prior"]), "--fid", "--n", "1", "--device", "cpu"]) == 2
    assert "at least 4 renders" in error_line(capsys)


def test_bad_input_gets_one_sentence(runs, tmp_path, capsys):
    objects = f"scenes:{runs['objects']}"
    assert main(["train", "mnif", "--dataset", objects, "--adapt", "cavia", "--max-steps", "1", "--device", "cpu",
                 "--out", str(tmp_path / "x")]) == 2
    assert "auto-decoding" in error_line(capsys)
    assert main(["train", "mnif", "--dataset", objects, "-o", "inner_steps=3", "--max-steps", "1", "--device", "cpu",
                 "--out", str(tmp_path / "x")]) == 2
    assert "inner_steps" in error_line(capsys)
    assert main(["train", "ginr", "--dataset", objects, "--method", "autodecoder", "--max-steps", "1",
                 "--device", "cpu", "--out", str(tmp_path / "x")]) == 2
    assert "token methods" in error_line(capsys)
    assert main(["generate", str(runs["prior"]), "--n", "0", "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    assert "at least 1" in error_line(capsys)
    assert main(["eval", str(runs["stage1"]), "--tto-steps", "2", "--device", "cpu"]) == 2
    assert "--tto-steps" in error_line(capsys)
    assert not (tmp_path / "x").exists()
