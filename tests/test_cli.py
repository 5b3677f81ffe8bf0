"""The `nfields` command end to end, in-process: fit, render, export, listings, and bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nfields

SMALL_FIT = ["--size", "32", "--steps", "60", "--quiet", "-o", "width=32", "--device", "cpu"]
METRIC_KEYS = {"psnr", "ssim", "steps", "seconds", "params", "field", "device"}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).astype(np.int32)


def assert_user_error(result, *gone: Path, match: str | None = None):
    """Exit code 2, one line on stderr (no traceback), and none of `gone` left behind."""
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err and "Traceback" not in result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("nfields: error: "), lines[0]
    if match:
        assert re.search(match, lines[0]), lines[0]
    for path in gone:
        assert not path.exists(), f"{path} was left behind"


# -- fit image -------------------------------------------------------------------------------------

def test_fit_image_writes_a_complete_run_folder(cli, image_png, tmp_path):
    out = tmp_path / "run"
    result = cli("fit", "image", image_png, "--field", "siren", "--out", out, *SMALL_FIT)
    assert result.code == 0, result.err
    assert f"siren on {image_png} (32x32x3, cpu): PSNR" in result.out
    assert "after 60 steps" in result.out
    assert "Traceback" not in result.err

    config = json.loads((out / "config.json").read_text())
    assert config["field"] == "siren" and config["steps"] == 60 and config["size"] == [32]
    assert config["kind"] == "fit-image" and config["format"] == 1
    assert config["image"] == {"height": 32, "width": 32, "channels": 3}
    assert config["field_spec"]["config"]["width"] == 32

    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["steps"] == 60 and metrics["field"] == "siren" and metrics["device"] == "cpu"
    assert metrics["params"] == nfields.fields.parameter_count(nfields.make_field("siren", 2, 3, width=32))
    assert metrics["seconds"] > 0 and 5 < metrics["psnr"] < 100 and 0 < metrics["ssim"] <= 1
    assert metrics["history"][-1]["step"] == 60

    assert read_png(out / "reconstruction.png").shape == (32, 32, 3)
    for picture in ("comparison.png", "curve.png"):
        with Image.open(out / picture) as img:
            assert img.format == "PNG" and img.width > 100
    tensors = sorted(out.glob("checkpoint-*.safetensors"))
    metas = sorted(out.glob("checkpoint-*.json"))
    assert [p.stem for p in tensors] == [p.stem for p in metas] == ["checkpoint-00000060"]
    assert json.loads(metas[0].read_text())["step"] == 60
    events = list((out / "events").iterdir())
    assert events and events[0].name.startswith("events.out.tfevents")
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*"))  # no temporary files left


def test_fitted_run_loads_from_python(fitted_run):
    fitted = nfields.load_fitted(fitted_run, device="cpu")
    assert (fitted.height, fitted.width) == (32, 32)
    image = fitted.render()
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    saved = read_png(fitted_run / "reconstruction.png")
    assert np.abs(np.round(image * 255) - saved).max() <= 1


def test_overwrite_replaces_a_run(cli, image_png, tmp_path):
    out = tmp_path / "run"
    assert cli("fit", "image", image_png, "--out", out, *SMALL_FIT).code == 0
    (out / "stale.txt").write_text("old")
    result = cli("fit", "image", image_png, "--out", out, "--overwrite", "--field", "relu", *SMALL_FIT)
    assert result.code == 0, result.err
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "metrics.json").read_text())["field"] == "relu"


def test_recipe_and_flags_precedence(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("fit", "image", "--recipe", "siren-camera", "--size", "16", "--steps", "3", "-o", "width=8",
                 "--quiet", "--device", "cpu", "--out", out)
    assert result.code == 0, result.err
    config = json.loads((out / "config.json").read_text())
    assert config["source"] == "camera" and config["coords"] == "endpoints" and config["lr"] == 1e-4  # recipe
    assert config["size"] == [16] and config["steps"] == 3  # flags win
    assert json.loads((out / "metrics.json").read_text())["image"] == "16x16x1"


def test_config_file_of_a_run_reproduces_it(cli, fitted_run, tmp_path):
    out = tmp_path / "again"
    result = cli("fit", "image", "--config", fitted_run / "config.json", "--steps", "5", "--quiet", "--out", out)
    assert result.code == 0, result.err
    again = json.loads((out / "config.json").read_text())
    original = json.loads((fitted_run / "config.json").read_text())
    assert again["steps"] == 5
    for key in ("source", "size", "field", "field_options", "coords", "seed"):
        assert again[key] == original[key], key


# -- render ------------------------------------------------------------------------------------

def test_render_scale(cli, fitted_run, tmp_path):
    result = cli("render", fitted_run, "--scale", "2", "--out", tmp_path / "x.png")
    assert result.code == 0, result.err
    assert "64x64" in result.out
    with Image.open(tmp_path / "x.png") as img:
        assert img.format == "PNG" and img.size == (64, 64) and img.mode == "RGB"


def test_render_scale_1_matches_reconstruction(cli, fitted_run, tmp_path):
    assert cli("render", fitted_run, "--scale", "1", "--out", tmp_path / "same.png").code == 0
    rendered, saved = read_png(tmp_path / "same.png"), read_png(fitted_run / "reconstruction.png")
    assert rendered.shape == saved.shape == (32, 32, 3)
    assert np.abs(rendered - saved).max() <= 1


def test_render_size_is_height_then_width(cli, fitted_run, tmp_path):
    result = cli("render", fitted_run, "--size", "40", "50", "--out", tmp_path / "hw.png")
    assert result.code == 0, result.err
    with Image.open(tmp_path / "hw.png") as img:
        assert img.size == (50, 40)  # PIL: (width, height)


def test_render_region_is_a_crop_of_the_super_resolved_image(cli, fitted_run, tmp_path):
    assert cli("render", fitted_run, "--scale", "2", "--out", tmp_path / "full.png").code == 0
    result = cli("render", fitted_run, "--region", "0", "0", "16", "16", "--scale", "2", "--out",
                 tmp_path / "zoom.png")
    assert result.code == 0, result.err
    full, zoom = read_png(tmp_path / "full.png"), read_png(tmp_path / "zoom.png")
    assert zoom.shape == (32, 32, 3)
    assert np.abs(zoom - full[:32, :32]).max() <= 1  # the same sample points
    # A region past the image (zoom out) works too, and --size with --region gives that size.
    result = cli("render", fitted_run, "--region", "-16", "-16", "48", "48", "--size", "20", "30",
                 "--out", tmp_path / "out.png")
    assert result.code == 0, result.err
    assert read_png(tmp_path / "out.png").shape == (20, 30, 3)


def test_render_other_formats(cli, fitted_run, tmp_path):
    for name in ("x.jpg", "x.tif"):
        assert cli("render", fitted_run, "--scale", "1", "--out", tmp_path / name).code == 0, name
        assert nfields.load_image(tmp_path / name).values.shape == (32, 32, 3)


def test_render_bad_arguments(cli, fitted_run, tmp_path):
    assert_user_error(cli("render", fitted_run, "--scale", "0", "--out", tmp_path / "a.png"), tmp_path / "a.png",
                      match="--scale must be positive")
    assert_user_error(cli("render", fitted_run, "--region", "10", "0", "5", "8", "--scale", "1", "--out",
                          tmp_path / "b.png"), tmp_path / "b.png", match="--region")
    assert_user_error(cli("render", fitted_run, "--scale", "1", "--out", tmp_path / "nowhere" / "c.png"),
                      tmp_path / "nowhere", match="does not exist")


# -- export ----------------------------------------------------------------------------------------

EXPORT_LINE = re.compile(r"wrote (?P<file>\S+): (?P<bytes>[\d,]+) bytes, (?P<bpp>[\d.]+) bits per pixel, "
                         r"PSNR (?P<psnr>[\d.]+) dB after (?P<bits>\d+)-bit quantisation \((?P<before>[\d.]+) dB before\)")


def test_export_16_and_8_bits(cli, fitted_run, tmp_path):
    reports = {}
    for bits in (16, 8):
        out = tmp_path / f"field-{bits}.safetensors"
        result = cli("export", fitted_run, "--bits", bits, "--out", out)
        assert result.code == 0, result.err
        match = EXPORT_LINE.search(result.out)
        assert match, result.out
        assert int(match["bits"]) == bits
        size = int(match["bytes"].replace(",", ""))
        assert size == out.stat().st_size
        assert float(match["bpp"]) == pytest.approx(8 * size / (32 * 32), abs=1e-3)
        reports[bits] = (size, float(match["psnr"]), float(match["before"]))
        restored = nfields.load_exported(out)
        assert restored.render().shape == (32, 32, 3)
    assert reports[8][0] < reports[16][0]
    before = json.loads((fitted_run / "metrics.json").read_text())["psnr"]
    assert reports[16][2] == pytest.approx(before, abs=0.01)
    assert reports[16][1] == pytest.approx(before, abs=0.1)  # half floats: practically lossless
    assert reports[8][1] == pytest.approx(before, abs=1.0)


def test_export_quantisation_round_trip():
    from nfields.jobs.export import dequantize, quantize

    torch.manual_seed(0)
    state = {"w": torch.randn(64, 32), "b": torch.randn(32), "const": torch.full((4,), 0.25)}
    for bits, tolerance in ((16, 1e-2), (8, None)):
        restored = dequantize(quantize(state, bits), bits)
        for name, tensor in state.items():
            bound = tolerance or float(tensor.max() - tensor.min()) / 255 / 2 + 1e-6
            assert (restored[name] - tensor).abs().max() <= bound, (bits, name)


def test_export_errors(cli, fitted_run, tmp_path):
    assert_user_error(cli("export", fitted_run, "--bits", "16", "--out", tmp_path / "no" / "f.safetensors"),
                      tmp_path / "no", match="does not exist")
    assert_user_error(cli("export", tmp_path, "--bits", "8", "--out", tmp_path / "f.safetensors"),
                      tmp_path / "f.safetensors", match="not a run folder")
    result = cli("export", fitted_run, "--bits", "4", "--out", tmp_path / "f.safetensors")  # argparse choices
    assert result.code == 2 and "Traceback" not in result.err
    with pytest.raises(nfields.NfieldsError, match="16 or 8"):
        nfields.export_run(fitted_run, 4, tmp_path / "f.safetensors")
    with pytest.raises(nfields.NfieldsError, match="not a readable exported field"):
        nfields.load_exported(tmp_path / "absent.safetensors")
    with pytest.raises(nfields.NfieldsError, match="not written by 'nfields export'"):
        nfields.load_exported(next(fitted_run.glob("checkpoint-*.safetensors")))


def test_load_exported_of_a_damaged_file_is_a_user_error(fitted_run, tmp_path):
    out = tmp_path / "f.safetensors"
    nfields.export_run(fitted_run, 16, out)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(nfields.NfieldsError):
        nfields.load_exported(out)


# -- inpainting ------------------------------------------------------------------------------------

def test_inpainting_keep_fraction(cli, image_png, tmp_path):
    out = tmp_path / "inpaint"
    result = cli("fit", "image", image_png, "--keep-fraction", "0.5", "--out", out, *SMALL_FIT)
    assert result.code == 0, result.err
    assert "held-out pixels: PSNR" in result.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"psnr_heldout", "psnr_train_pixels"} <= set(metrics)
    assert metrics["psnr_heldout"] > 0
    assert (out / "comparison.png").exists()


def test_inpainting_mask_file(cli, image_png, tmp_path):
    mask = np.zeros((48, 48), np.uint8)  # the image's own size; it is resized with the image
    mask[:, :24] = 255  # train on the left half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "masked"
    result = cli("fit", "image", image_png, "--mask", tmp_path / "mask.png", "--out", out, *SMALL_FIT)
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "psnr_heldout" in metrics and "psnr_train_pixels" in metrics
    assert metrics["psnr_train_pixels"] > metrics["psnr_heldout"]


def test_inpainting_bad_masks(cli, image_png, tmp_path):
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "black.png")
    out = tmp_path / "run"
    assert_user_error(cli("fit", "image", image_png, "--mask", tmp_path / "black.png", "--out", out, *SMALL_FIT),
                      out, match="keeps no pixels")
    assert_user_error(cli("fit", "image", image_png, "--mask", tmp_path / "black.png", "--keep-fraction", "0.5",
                          "--out", out, *SMALL_FIT), out, match="not both")
    assert_user_error(cli("fit", "image", image_png, "--keep-fraction", "0", "--out", out, *SMALL_FIT), out,
                      match="--keep-fraction")


# -- listings --------------------------------------------------------------------------------------

def test_datasets(cli):
    result = cli("datasets")
    assert result.code == 0
    camera = [line for line in result.out.splitlines() if line.startswith("camera")]
    assert camera and "[installed]" in camera[0]
    assert len(result.out.splitlines()) == len(nfields.catalog.entries())


def test_fields(cli):
    result = cli("fields")
    assert result.code == 0
    for name in nfields.FIELDS.names() + nfields.SCENE_FIELDS.names():
        assert re.search(rf"^  {re.escape(name)}\s", result.out, re.M), name
    assert "omega0=30.0" in result.out and "log2_table_size=19" in result.out and "fine_samples=128" in result.out


def test_recipes(cli):
    result = cli("recipes")
    assert result.code == 0
    for name in ("siren-camera", "siren-camera-512", "hashgrid-camera-512"):
        assert name in result.out


def test_no_command_is_a_usage_error(cli):
    result = cli()
    assert result.code == 2 and "usage:" in result.err and "Traceback" not in result.err


# -- bad input -------------------------------------------------------------------------------------

def _text_png(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    return path


def _truncated_png(tmp_path: Path) -> Path:
    whole = tmp_path / "whole.png"
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(whole)
    data = whole.read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_FITS = {
    # name: (lambda tmp_path, image_png -> argv before the common flags, message regex)
    "missing-file": (lambda t, img: [t / "missing.png"], "does not exist"),
    "text-as-png": (lambda t, img: [_text_png(t)], "not an image"),
    "truncated-png": (lambda t, img: [_truncated_png(t)], "truncated or damaged"),
    "unknown-field": (lambda t, img: [img, "--field", "sirne"], "unknown field 'sirne'.*did you mean 'siren'"),
    "unknown-builtin": (lambda t, img: ["camra"], "neither a file nor a built-in.*did you mean 'camera'"),
    "steps-0": (lambda t, img: [img, "--steps", "0"], "--steps must be a positive"),
    "steps-negative": (lambda t, img: [img, "--steps", "-3"], "--steps must be a positive"),
    "size-0": (lambda t, img: [img, "--size", "0"], "--size"),
    "size-three-numbers": (lambda t, img: [img, "--size", "8", "8", "8"], "--size"),
    "unknown-option": (lambda t, img: [img, "-o", "widht=32"], "no option 'widht'.*did you mean 'width'"),
    "option-without-value": (lambda t, img: [img, "-o", "omega0"], "KEY=VALUE"),
    "option-wrong-type": (lambda t, img: [img, "-o", "omega0=fast"], "must be a float"),
    "negative-lr": (lambda t, img: [img, "--lr", "-1"], "--lr must be positive"),
    "unknown-coords": (lambda t, img: [img, "--coords", "corners"], "coordinate convention"),
    "unknown-recipe": (lambda t, img: [img, "--recipe", "siren-camra"], "did you mean 'siren-camera'"),
    "no-source": (lambda t, img: [], "give an image"),
    "folder-as-source": (lambda t, img: [t], "is a folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_FITS))
def test_bad_fit_input(cli, image_png, tmp_path, case):
    make_argv, message = BAD_FITS[case]
    out = tmp_path / "run"
    argv = make_argv(tmp_path, image_png)
    # The common flags, minus any the case sets itself.
    common = ["--quiet", "--device", "cpu", "--out", out]
    if "--steps" not in argv:
        common += ["--steps", "5"]
    if "--size" not in argv:
        common += ["--size", "16"]
    if "-o" not in argv:
        common += ["-o", "width=8"]
    assert_user_error(cli("fit", "image", *argv, *common), out, match=message)


def test_output_folder_not_writable(cli, image_png, tmp_path):
    # Tests may run as root, where a read-only folder still accepts writes; a path below a *file*
    # cannot be created by anyone.
    blocker = tmp_path / "afile"
    blocker.write_text("I am a file")
    out = blocker / "run"
    assert_user_error(cli("fit", "image", image_png, "--out", out, *SMALL_FIT), match="cannot write")
    assert blocker.read_text() == "I am a file"
    assert_user_error(cli("fit", "image", image_png, "--out", blocker, *SMALL_FIT), match="is a file")
    assert blocker.is_file()


def test_image_too_large_for_memory(cli, image_png, tmp_path, monkeypatch):
    monkeypatch.setattr("nfields.data.image.available_memory", lambda: 10_000)
    out = tmp_path / "run"
    assert_user_error(cli("fit", "image", image_png, "--out", out, *SMALL_FIT), out, match="too large")


def test_training_that_does_not_fit_in_memory(cli, image_png, tmp_path, monkeypatch):
    # The full-batch step's activations are checked against host memory before training.
    # (`nfields.jobs.fit_image` the attribute is the function; the module is in sys.modules.)
    monkeypatch.setattr(sys.modules["nfields.jobs.fit_image"], "available_memory", lambda: 10_000)
    out = tmp_path / "run"
    assert_user_error(cli("fit", "image", image_png, "--out", out, *SMALL_FIT), out, match="--batch-pixels")


def test_diverging_run_leaves_no_folder(cli, image_png, tmp_path):
    out = tmp_path / "run"
    result = cli("fit", "image", image_png, "--field", "relu", "--lr", "1e30", "--out", out, "--size", "16",
                 "--steps", "50", "--log-every", "5", "--quiet", "--device", "cpu", "-o", "width=8")
    assert_user_error(result, out, match="diverged")


def test_existing_run_needs_resume_or_overwrite(cli, image_png, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert_user_error(cli("fit", "image", image_png, "--out", out, *SMALL_FIT), match="holds no nfields run")
    assert_user_error(cli("fit", "image", image_png, "--out", out, "--overwrite", *SMALL_FIT),
                      match="holds no nfields run")
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_resume_with_nothing_to_resume(cli, image_png, tmp_path):
    out = tmp_path / "run"
    assert_user_error(cli("fit", "image", "--resume", "--out", out, "--quiet"), out, match="no run to resume")
    assert_user_error(cli("fit", "image", image_png, "--resume", "--out", out, *SMALL_FIT), out,
                      match="no run to resume")
    out.mkdir()  # an empty folder is not a run either
    assert_user_error(cli("fit", "image", image_png, "--resume", "--out", out, *SMALL_FIT),
                      match="no run to resume")
    assert list(out.iterdir()) == []


def test_render_of_a_folder_that_is_not_a_run(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    target = tmp_path / "x.png"
    assert_user_error(cli("render", tmp_path / "empty", "--scale", "1", "--out", target), target,
                      match="not a run folder")
    assert_user_error(cli("render", tmp_path / "absent", "--scale", "1", "--out", target), target,
                      match="does not exist")


def test_resume_with_different_settings_is_refused(cli, fitted_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(fitted_run, run)
    before = sorted(p.name for p in run.iterdir())
    assert_user_error(cli("fit", "image", "--resume", "--out", run, "--field", "relu", "--steps", "80", "--quiet"),
                      match="field='siren'")
    assert sorted(p.name for p in run.iterdir()) == before


# -- regressions: bugs found and fixed --------------------------------------------------------------

def test_export_from_another_directory(cli, image_png, tmp_path, monkeypatch):
    assert cli("fit", "image", image_png.name, "--out", "run", *SMALL_FIT).code == 0  # cwd is tmp_path
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = cli("export", "../run", "--bits", "16", "--out", "f.safetensors")
    assert result.code == 0, result.err


def test_resume_from_another_directory(cli, image_png, tmp_path, monkeypatch):
    assert cli("fit", "image", image_png.name, "--out", "run", *SMALL_FIT).code == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = cli("fit", "image", "--resume", "--out", "../run", "--steps", "80", "--quiet")
    assert result.code == 0, result.err


def test_render_size_zero_is_refused(cli, fitted_run, tmp_path):
    assert_user_error(cli("render", fitted_run, "--size", "0", "50", "--out", tmp_path / "z.png"),
                      tmp_path / "z.png", match="positive")


def test_failed_fit_into_an_existing_empty_folder_leaves_it_empty(cli, image_png, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    result = cli("fit", "image", image_png, "--field", "relu", "--lr", "1e30", "--out", out, "--size", "16",
                 "--steps", "50", "--log-every", "5", "--quiet", "--device", "cpu", "-o", "width=8")
    assert_user_error(result, match="diverged")
    assert list(out.iterdir()) == []


def test_resume_accepts_the_same_option_given_as_a_flag(cli, image_png, tmp_path):
    out = tmp_path / "run"
    assert cli("fit", "image", image_png, "--out", out, *SMALL_FIT).code == 0  # -o width=32
    result = cli("fit", "image", "--resume", "--out", out, "--steps", "80", "--width", "32", "--quiet")
    assert result.code == 0, result.err
