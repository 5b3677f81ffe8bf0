"""Audio: loading every format, time coordinates, metrics, SIREN's audio setup, the CLI end to end,
resume, and every bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import nfields
from nfields.data import catalog
from nfields.data.audio import resampled_axis
from nfields.metrics import snr, waveform_psnr
from test_cli import assert_user_error

RATE = 8000


def two_sines(seconds: float = 0.25, channels: int = 1) -> np.ndarray:
    """(N, C) float32: 220 Hz + 660 Hz (second channel: 330 Hz)."""
    t = np.arange(round(seconds * RATE)) / RATE
    first = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)
    planes = [first, 0.4 * np.cos(2 * np.pi * 330 * t)][:channels]
    return np.stack(planes, -1).astype(np.float32)


@pytest.fixture
def wav(tmp_path) -> Path:
    path = tmp_path / "sines.wav"
    soundfile.write(path, two_sines(), RATE, subtype="PCM_16")
    return path


def fit_options(**extra):
    return dict(steps=250, device="cpu", progress=False, log_every=50, checkpoint_every=10**6, **extra)


# -- loading ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, subtype, channels, tolerance", [
    (".wav", "PCM_16", 1, 1 / 32768), (".wav", "FLOAT", 2, 0.0), (".wav", "PCM_24", 2, 2**-23),
    (".flac", "PCM_16", 1, 1 / 32768), (".flac", "PCM_16", 2, 1 / 32768)])
def test_lossless_files_round_trip(tmp_path, suffix, subtype, channels, tolerance):
    samples = two_sines(channels=channels)
    path = tmp_path / f"clip{suffix}"
    soundfile.write(path, samples, RATE, subtype=subtype)
    signal = nfields.load_audio(path)
    assert (signal.rate, signal.channels, signal.length, signal.name) == (RATE, channels, len(samples), "clip")
    assert signal.samples.dtype == np.float32
    assert np.abs(signal.samples - samples).max() <= tolerance
    assert signal.duration == pytest.approx(0.25)


@pytest.mark.parametrize("suffix", [".ogg", ".mp3"])
def test_lossy_files_load(tmp_path, suffix):
    samples = two_sines(seconds=0.5, channels=2)
    path = tmp_path / f"clip{suffix}"
    soundfile.write(path, samples, RATE)
    signal = nfields.load_audio(path)
    assert (signal.rate, signal.channels) == (RATE, 2)
    assert abs(signal.length - len(samples)) < 0.1 * len(samples)  # codecs may pad a little
    rms = np.sqrt((signal.samples ** 2).mean(0))
    assert np.allclose(rms, np.sqrt((samples ** 2).mean(0)), rtol=0.2), rms  # the same loudness per channel


def test_crop_coordinates_and_render_at_any_rate(wav):
    signal = nfields.load_audio(wav, max_seconds=0.1)
    assert signal.length == 800
    coords = signal.coords()
    assert coords.shape == (800, 1) and coords[0, 0] == -1 and coords[-1, 0] == 1  # linspace(-1, 1), endpoints
    assert torch.allclose(resampled_axis(800, RATE, RATE), coords[:, 0])
    double = resampled_axis(800, RATE, 2 * RATE)
    assert len(double) == 1599 and torch.allclose(double[::2], coords[:, 0], atol=1e-6)
    assert len(resampled_axis(800, RATE, RATE / 2)) == 400


def test_metrics_conventions():
    target = torch.tensor([[0.5], [-0.5], [0.25], [0.0]])
    assert waveform_psnr(target + 0.01, target) == pytest.approx(10 * math.log10(4 / 1e-4), abs=1e-3)
    assert snr(target + 0.01, target) == pytest.approx(10 * math.log10(0.5625 / 4e-4), abs=1e-3)
    assert snr(1.5 * target + 0.015, 1.5 * target) == pytest.approx(snr(target + 0.01, target), abs=1e-3)
    assert waveform_psnr(torch.full((4, 1), 3.0), torch.ones(4, 1)) > 100  # clamped to [-1, 1] first


# -- fitting ---------------------------------------------------------------------------------------

def test_siren_with_audio_omega_fits_and_beats_relu(wav):
    signal = nfields.load_audio(wav)
    fitted = {}
    for name in ("siren", "relu"):
        torch.manual_seed(0)
        field = nfields.make_audio_field(name, signal.channels, width=64)
        fitted[name], _ = nfields.fit_audio(signal, field, **fit_options())
    siren, relu = fitted["siren"].metrics, fitted["relu"].metrics
    assert fitted["siren"].field.spec()["config"]["first_omega0"] == 3000.0
    assert nfields.make_audio_field("siren", 1, first_omega0=50.0).spec()["config"]["first_omega0"] == 50.0
    assert siren["psnr"] > 42.0 and siren["snr"] > 28.0, (siren, relu)
    assert siren["snr"] > relu["snr"] + 20.0, (siren, relu)
    # the continuous field: at the clip's rate it reproduces the clip, at twice the rate it interpolates
    same, double = fitted["siren"].render(), fitted["siren"].render(rate=2 * RATE)
    assert waveform_psnr(torch.from_numpy(same), signal.targets()) == pytest.approx(siren["psnr"], abs=1e-3)
    assert double.shape == (2 * signal.length - 1, 1)
    assert np.abs(double[::2] - same).max() < 1e-5


def test_stereo_batches_and_no_normalisation(tmp_path):
    path = tmp_path / "stereo.wav"
    soundfile.write(path, 0.5 * two_sines(channels=2), RATE, subtype="FLOAT")
    signal = nfields.load_audio(path)
    torch.manual_seed(0)
    fitted, trainer = nfields.fit_audio(signal, nfields.make_audio_field("siren", 2, width=64),
                                        **fit_options(batch_samples=500, normalize="none"))
    assert fitted.scale == 1.0 and trainer.step == 250
    assert fitted.render().shape == (signal.length, 2)
    assert fitted.metrics["snr"] > 10.0
    with pytest.raises(nfields.NfieldsError, match="make_audio_field"):
        nfields.fit_audio(signal, nfields.make_audio_field("siren", 1, width=8), **fit_options())


# -- command line ----------------------------------------------------------------------------------

def test_cli_writes_a_complete_run_folder(cli, wav, tmp_path):
    out = tmp_path / "run"
    result = cli("fit", "audio", wav, "--steps", "200", "--width", "64", "--out", out, "--quiet", "--device", "cpu",
                 "--eval-at", "100")
    assert result.code == 0, result.err
    assert "PSNR" in result.out and "SNR" in result.out
    for name in ("reconstruction.wav", "comparison.png", "curve.png", "metrics.json", "config.json"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*tmp*"))
    samples, rate = soundfile.read(out / "reconstruction.wav", always_2d=True)
    assert rate == RATE and samples.shape == (2000, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "snr", "steps", "seconds", "params", "field", "device", "sample_rate", "duration",
                "channels"):
        assert key in metrics, key
    assert (metrics["steps"], metrics["sample_rate"], metrics["channels"], metrics["field"]) == (200, RATE, 1, "siren")
    assert metrics["duration"] == pytest.approx(0.25)
    assert metrics["psnr"] > 40.0
    # the written file matches the reported PSNR up to 16-bit rounding
    target = soundfile.read(wav, dtype="float32", always_2d=True)[0]
    assert waveform_psnr(torch.from_numpy(samples), torch.from_numpy(target)) == pytest.approx(metrics["psnr"], abs=0.5)
    config = json.loads((out / "config.json").read_text())
    assert config["field_spec"]["config"]["first_omega0"] == 3000.0 and config["audio"]["rate"] == RATE
    assert config["kind"] == "fit-audio" and config["format"] == 1  # the run manifest (nfields.train.manifest)
    assert [e["step"] for e in metrics["history"]] == [100, 200]


def test_cli_resume_continues_the_run(cli, wav, tmp_path):
    out = tmp_path / "run"
    common = ("--width", "16", "--out", out, "--quiet", "--device", "cpu", "--checkpoint-every", "20")
    assert cli("fit", "audio", wav, "--steps", "40", "--field", "relu", "--max-seconds", "0.1", *common).code == 0
    first = json.loads((out / "metrics.json").read_text())
    result = cli("fit", "audio", "--resume", "--steps", "60", *common)
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["field"] == "relu" and metrics["seconds"] > first["seconds"]
    assert soundfile.info(str(out / "reconstruction.wav")).frames == 800  # the stored crop, not the whole clip
    assert_user_error(cli("fit", "audio", "--resume", "--max-seconds", "0.2", *common), match="max_seconds")


def test_cli_recipe_and_option_precedence(cli, wav, tmp_path):
    out = tmp_path / "run"
    result = cli("fit", "audio", wav, "--recipe", "siren-audio", "--steps", "5", "--width", "8", "-o",
                 "first_omega0=500", "--out", out, "--quiet", "--device", "cpu")
    assert result.code == 0, result.err
    config = json.loads((out / "config.json").read_text())
    assert config["field_options"] == {"first_omega0": 500.0, "width": 8} and config["lr"] == 1e-4
    assert config["source"] == str(wav.resolve())


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing.wav", "does not exist"),
    (lambda d: (d / "text.wav").write_text("not audio at all") and d / "text.wav", "not an audio file"),
    (lambda d: (d / "picture.flac").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)) and d / "picture.flac",
     "not an audio file"),
    (lambda d: soundfile.write(d / "empty.wav", np.zeros((0, 1), np.float32), RATE) or d / "empty.wav", "no audio"),
    (lambda d: soundfile.write(d / "nan.wav", np.full((8, 1), np.nan, np.float32), RATE, subtype="FLOAT")
     or d / "nan.wav", "NaN"),
    (lambda d: "front-centre", "neither a file nor a built-in"),
    (lambda d: "camera", "not audio"),
    (lambda d: d, "folder"),
])
def test_cli_bad_input_is_one_sentence_and_leaves_nothing(cli, tmp_path, make, match):
    source = make(tmp_path)
    out = tmp_path / "run"
    assert_user_error(cli("fit", "audio", source, "--steps", "2", "--out", out, "--quiet"), out, match=match)


@pytest.mark.parametrize("flags, match", [
    (("--max-seconds", "0"), "max-seconds"), (("--batch-samples", "-1"), "batch-samples"),
    (("--normalize", "rms"), "normalize")])
def test_cli_bad_settings(cli, wav, tmp_path, flags, match):
    out = tmp_path / "run"
    assert_user_error(cli("fit", "audio", wav, "--steps", "2", "--out", out, "--quiet", *flags), out, match=match)


# -- built-in clips ----------------------------------------------------------------------------------

def test_builtin_clips_are_listed(cli):
    result = cli("datasets")
    line = next(line for line in result.out.splitlines() if line.startswith("front-center"))
    assert "audio" in line and ("installed" in line or "Debian alsa-utils" in line)


@pytest.mark.skipif(catalog.ENTRIES["front-center"].path() is None, reason="Debian alsa-utils not installed")
def test_builtin_alsa_clip_loads():
    signal = nfields.load_audio("front-center", max_seconds=0.5)
    assert (signal.rate, signal.channels, signal.length, signal.name) == (48000, 1, 24000, "front-center")
    assert 0.05 < np.abs(nfields.load_audio("front-center").samples).max() <= 1.0
