"""Every command on every kind of run (render and export of audio, video and shape runs), the Python API with
str paths, and the loaders' and memory guards' checks that back the hostile-input suite."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from PIL import Image

import nfields
from conftest import REPO, run_cli_quietly, subprocess_env
from nfields.jobs.runs import short_kind


def ok(*argv) -> str:
    result = run_cli_quietly(*map(str, argv))
    assert result.code == 0, result.err
    return result.out


# -- the kind of a run ---------------------------------------------------------------------------------

def test_short_kind_of_each_run_and_a_kind_key(kind_runs, tmp_path):
    for kind in ("image", "audio", "video", "shape"):
        assert short_kind(kind_runs[kind]) == kind
        assert short_kind(str(kind_runs[kind])) == kind
    (tmp_path / "config.json").write_text(json.dumps({"kind": "fit-audio", "format": 1, "image": {}}))
    assert short_kind(tmp_path) == "audio"  # an explicit kind wins over the keys


# -- render -------------------------------------------------------------------------------------------

def test_render_audio_at_any_sample_rate(kind_runs, tmp_path):
    ok("render", kind_runs["audio"], "--rate", "22050", "--out", tmp_path / "up.wav", "--device", "cpu")
    samples, rate = soundfile.read(tmp_path / "up.wav")
    assert rate == 22050 and len(samples) == int(799 * 22050 / 8000) + 1
    ok("render", kind_runs["audio"], "--out", tmp_path / "same.flac", "--device", "cpu")
    assert soundfile.info(str(tmp_path / "same.flac")).samplerate == 8000


def test_render_video_at_any_size_and_frame_rate_or_one_frame(kind_runs, tmp_path):
    ok("render", kind_runs["video"], "--size", "12", "20", "--fps", "24", "--out", tmp_path / "v.mp4", "--device",
       "cpu")
    video = nfields.load_video(tmp_path / "v.mp4")
    assert video.num_frames == 16 and (video.height, video.width) == (12, 20) and video.fps == 24
    ok("render", kind_runs["video"], "--frame", "2.5", "--scale", "2", "--out", tmp_path / "f.png", "--device", "cpu")
    with Image.open(tmp_path / "f.png") as img:
        assert img.size == (64, 48)


def test_render_shape_mesh_at_any_resolution_and_export_mesh(kind_runs, tmp_path):
    from nfields.render.mesh import read_ply

    out = ok("render", kind_runs["shape"], "--resolution", "20", "--out", tmp_path / "m.ply", "--device", "cpu")
    assert "20³ grid" in out
    vertices, faces = read_ply(tmp_path / "m.ply")
    assert len(faces) > 100 and np.abs(vertices).max() <= 1.0
    ok("export", kind_runs["shape"], "--mesh", "--resolution", "12", "--out", tmp_path / "e.ply", "--device", "cpu")
    assert len(read_ply(tmp_path / "e.ply")[1]) > 0


# -- export --bits on every single-field kind ----------------------------------------------------------

@pytest.mark.parametrize("kind, cls", [("image", "FittedImage"), ("audio", "FittedAudio"), ("video", "FittedVideo"),
                                       ("shape", "FittedShape")])
def test_export_bits_of_every_single_field_run_loads_back(kind, cls, kind_runs, tmp_path):
    out = ok("export", kind_runs[kind], "--bits", "8", "--out", tmp_path / "q.safetensors")
    assert "bytes" in out and ("PSNR" in out or "signed distance" in out)
    restored = nfields.load_exported(str(tmp_path / "q.safetensors"))
    assert type(restored).__name__ == cls
    if kind == "audio":
        assert restored.render().shape == (800, 1)
    elif kind == "video":
        assert restored.render(2).shape == (2, 24, 32, 3)
    elif kind == "image":
        assert restored.render().shape == (24, 24, 3)


# -- the Python API takes str or Path -----------------------------------------------------------------

def test_python_api_takes_str_paths(kind_runs, tmp_path):
    assert nfields.load_fitted(str(kind_runs["image"]), device="cpu").render().shape == (24, 24, 3)
    assert nfields.load_fitted_audio(str(kind_runs["audio"]), "cpu").render(16000).shape[1] == 1
    assert nfields.load_fitted_video(str(kind_runs["video"]), "cpu").render(1).shape == (1, 24, 32, 3)
    assert nfields.load_fitted_shape(str(kind_runs["shape"]), "cpu").mode == "sdf"
    report = nfields.export_run(str(kind_runs["image"]), 16, str(tmp_path / "x.safetensors"))
    assert report["bytes"] > 0
    image = nfields.load_image(str(kind_runs["root"] / "sources" / "image.png"))
    fitted, _ = nfields.fit_image(image, nfields.make_field("siren", 2, 3, width=8), steps=2, device="cpu",
                                  progress=False, run_dir=str(tmp_path / "run"), checkpoint_every=1)
    assert list((tmp_path / "run").glob("checkpoint-*.safetensors"))


# -- loaders and guards -------------------------------------------------------------------------------

def test_field_options_are_checked_up_front():
    for options, match in ((dict(width=0), "at least 1"), (dict(width="-3"), "at least 1"),
                           (dict(omega0="nan"), "finite"), (dict(hidden_layers=-1), "at least 0"),
                           (dict(width=10 ** 6), "memory")):
        with pytest.raises(nfields.NfieldsError, match=match):
            nfields.make_field("siren", 2, 1, **options)
    with pytest.raises(nfields.NfieldsError, match="sigma"):
        nfields.make_field("fourier", 2, 1, sigma=0)
    with pytest.raises(nfields.NfieldsError, match="width"):
        nfields.make_scene_field("nerf", width=0)


def test_nan_vertex_is_refused_before_trimesh_drops_it(tmp_path):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=1)
    lines = ["OFF", f"{len(mesh.vertices)} {len(mesh.faces)} 0"]
    lines += [" ".join(map(str, v)) for v in mesh.vertices] + [f"3 {a} {b} {c}" for a, b, c in mesh.faces]
    lines[5] = "0.1 nan 0.3"
    (tmp_path / "nan.off").write_text("\n".join(lines) + "\n")
    with pytest.raises(nfields.NfieldsError, match="not finite"):
        nfields.load_shape(tmp_path / "nan.off")


def test_voxels_and_prepared_samples_with_nan_are_refused(tmp_path):
    from nfields.data.voxels import occupancy_to_mesh

    grid = np.zeros((8, 8, 8), np.float32)
    grid[2, 2, 2] = np.nan
    with pytest.raises(nfields.NfieldsError, match="NaN"):
        occupancy_to_mesh(grid)
    np.savez(tmp_path / "s.npz", name=np.array("x"), watertight=np.array(False),
             vertices=np.array([[0, 0, np.nan]], np.float32), normals=np.ones((1, 3), np.float16))
    with pytest.raises(nfields.NfieldsError, match="NaN"):
        nfields.ShapeSamples.load_npz(tmp_path / "s.npz")


def test_decoding_leaves_pillows_pixel_limit_as_it_was(kind_runs):
    limit = Image.MAX_IMAGE_PIXELS
    nfields.load_image(kind_runs["root"] / "sources" / "image.png")
    assert Image.MAX_IMAGE_PIXELS == limit


MEASURE = """
import sys
from pathlib import Path
from nfields.data import image
def peak():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
base = int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")
values = image._decode(Path(sys.argv[1]))
print((peak() - base) / values.size)
"""


@pytest.mark.parametrize("mode", ["RGB", "I;16"])
def test_decoding_costs_no_more_memory_than_the_guard_assumes(mode, tmp_path):
    # The measured peak RSS of decoding a 2000x2000 image, per pixel-channel, is under the guard's factor.
    y, x = np.mgrid[0:2000, 0:2000]
    plane = ((x ^ y) & 255).astype(np.uint8)
    path = tmp_path / "big.png"
    if mode == "RGB":
        Image.fromarray(np.stack([plane, plane.T, 255 - plane], -1)).save(path, compress_level=1)
    else:
        Image.fromarray(plane.astype(np.uint16) * 257).save(path, compress_level=1)
    measured = float(subprocess.run([sys.executable, "-c", MEASURE, str(path)], env=subprocess_env(), cwd=REPO,
                                    capture_output=True, text=True, check=True).stdout)
    from nfields.data.image import DECODE_BYTES_PER_VALUE

    assert 4 <= measured <= DECODE_BYTES_PER_VALUE
