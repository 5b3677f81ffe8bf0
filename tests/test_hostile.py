"""Hostile input, across the commands: every case exits 2 with exactly one line on stderr, no traceback, and
leaves the disk exactly as it was (every file's size and mtime under the test's folder compared before and
after). Each fails at validation, so the whole suite stays fast; the runs it aims at are built once."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image, run_cli_quietly, to_uint8

#: The side of the real PNG that must be refused before it is decoded (a decompression bomb for Pillow too).
HUGE = 30000


def write_zero_png(path: Path, height: int, width: int) -> None:
    """A real 8-bit gray PNG of zeros, compressed a row at a time (the whole image is never in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte 0, then the row
    parts = [compressor.compress(row) for _ in range(height)]
    data = b"".join(parts) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def write_scene(folder: Path, file_path: str, image: Path | None = None) -> Path:
    """A one-view scene whose frame names `file_path` (with `image` written there when given)."""
    folder.mkdir(parents=True)
    if image is not None:
        shutil.copy(image, folder / file_path)
    pose = np.eye(4)
    pose[2, 3] = 4.0
    (folder / "transforms_train.json").write_text(json.dumps(
        {"camera_angle_x": 0.69, "frames": [{"file_path": file_path, "transform_matrix": pose.tolist()}]}))
    return folder


@pytest.fixture(scope="module")
def hostile(kind_runs, tmp_path_factory) -> dict[str, Path]:
    """Bad inputs of every kind beside the tiny runs, in one folder: `hostile["root"]`."""
    import soundfile
    import tifffile

    root = kind_runs["root"]
    bad = root / "hostile"
    bad.mkdir(exist_ok=True)
    files = {"root": root, "work": root / "work", **{k: v for k, v in kind_runs.items() if k != "root"}}
    files["work"].mkdir(exist_ok=True)

    files["huge_png"] = bad / "huge.png"
    write_zero_png(files["huge_png"], HUGE, HUGE)
    good = to_uint8(make_image(16, 16, 3))
    folder = bad / "nan-folder"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(good).save(folder / f"{i}.png")
    nan = make_image(16, 16, 3)
    nan[3, 4, 1] = np.nan
    tifffile.imwrite(folder / "3.tif", nan, photometric="rgb")
    files["nan_folder"] = folder
    files["nan_tiff"] = folder / "3.tif"
    files["inf_tiff"] = bad / "inf.tif"
    tifffile.imwrite(files["inf_tiff"], np.where(make_image(16, 16, 1) > 0.5, np.inf, 0.2).astype(np.float32))

    sphere = (root / "sources" / "sphere.off").read_text().splitlines()
    counts = sphere[1].split()
    files["nan_mesh"] = bad / "nan.off"
    files["nan_mesh"].write_text("\n".join(sphere[:2] + ["nan 0 0"] + sphere[3:]) + "\n")
    files["bad_faces"] = bad / "faces.off"
    files["bad_faces"].write_text("\n".join(sphere[:-1] + [f"3 0 1 {int(counts[0]) + 5}"]) + "\n")
    files["empty_mesh"] = bad / "empty.ply"
    files["empty_mesh"].write_bytes(b"")

    t = np.linspace(0, 1, 800, dtype=np.float32)
    wave = np.sin(40 * t)
    wave[100] = np.nan
    files["nan_wav"] = bad / "nan.wav"
    soundfile.write(files["nan_wav"], wave, 8000, subtype="FLOAT")
    files["not_video"] = bad / "noise.mp4"
    files["not_video"].write_bytes(bytes(range(256)) * 8)

    files["bomb_scene"] = write_scene(bad / "bomb-scene", "r_0.png", files["huge_png"])
    files["escape_scene"] = write_scene(bad / "escape-scene", "../../sources/image")
    files["empty_json_scene"] = bad / "json-scene"
    files["empty_json_scene"].mkdir()
    (files["empty_json_scene"] / "transforms_train.json").write_text("[1, 2")

    files["objects_npz"] = bad / "objects.npz"
    np.savez(files["objects_npz"], samples=np.array([{"a": 1}, None], dtype=object))
    files["nan_npz"] = bad / "nan-samples.npz"
    np.savez(files["nan_npz"], samples=np.full((4, 8, 8, 1), np.nan, np.float32))

    # A run whose checkpoint does not match the model its config.json describes.
    for name, change in (("other-width", {"width": 8}), ("other-field", None)):
        run = bad / name
        shutil.copytree(files["image"], run)
        config = json.loads((run / "config.json").read_text())
        if change:
            config["field_spec"]["config"].update(change)
        else:
            config["field_spec"] = {"name": "relu", "in_features": 2, "out_features": 3,
                                    "config": {"width": 16, "hidden_layers": 3}}
        (run / "config.json").write_text(json.dumps(config))
        files[name] = run
    files["not_a_run"] = bad / "plain-folder"
    files["not_a_run"].mkdir()
    (files["not_a_run"] / "notes.txt").write_text("not a run")
    files["list_config"] = bad / "list-config"
    files["list_config"].mkdir()
    (files["list_config"] / "config.json").write_text("[1, 2, 3]")
    return files


QUICK = ["--quiet", "--device", "cpu", "--steps", "2"]

#: id -> (argv with {name} for a path of the `hostile` fixture, a regular expression the message must match).
CASES = {
    # fit image
    "fit-image-width-0": (["fit", "image", "{image_src}", "-o", "width=0", "--out", "{out}", *QUICK], "width"),
    "fit-image-width-negative": (["fit", "image", "{image_src}", "--width", "-3", "--out", "{out}", *QUICK],
                                 "width"),
    "fit-image-omega0-nan": (["fit", "image", "{image_src}", "-o", "omega0=nan", "--out", "{out}", *QUICK],
                             "omega0.*finite"),
    "fit-image-omega0-zero": (["fit", "image", "{image_src}", "-o", "omega0=0", "--out", "{out}", *QUICK],
                              "omega0"),
    "fit-image-hidden-layers-negative": (["fit", "image", "{image_src}", "--hidden-layers", "-1", "--out",
                                          "{out}", *QUICK], "hidden_layers"),
    "fit-image-lr-inf": (["fit", "image", "{image_src}", "--lr", "inf", "--out", "{out}", *QUICK], "lr.*finite"),
    "fit-image-lr-nan": (["fit", "image", "{image_src}", "--lr", "nan", "--out", "{out}", *QUICK], "lr"),
    "fit-image-hashgrid-table-huge": (["fit", "image", "{image_src}", "--field", "hashgrid", "-o",
                                       "log2_table_size=40", "--out", "{out}", *QUICK], "log2_table_size"),
    "fit-image-field-too-big": (["fit", "image", "{image_src}", "--width", "200000", "--out", "{out}", *QUICK],
                                "memory"),
    "fit-image-option-not-a-number": (["fit", "image", "{image_src}", "-o", "width=wide", "--out", "{out}",
                                       *QUICK], "width"),
    "fit-image-huge-png": (["fit", "image", "{huge_png}", "--out", "{out}", *QUICK], "too large"),
    "fit-image-nan-tiff": (["fit", "image", "{nan_tiff}", "--out", "{out}", *QUICK], "NaN"),
    "fit-image-inf-tiff": (["fit", "image", "{inf_tiff}", "--out", "{out}", *QUICK], "infinite"),
    "fit-image-missing-file": (["fit", "image", "{work}/nothing.png", "--out", "{out}", *QUICK], None),
    # fit images
    "fit-images-nan-tiff-in-folder": (["fit", "images", "{nan_folder}", "--split", "all", "--out", "{out}",
                                       *QUICK], "NaN"),
    "fit-images-width-0": (["fit", "images", "{nan_folder}", "-o", "width=0", "--out", "{out}", *QUICK],
                           "width"),
    # fit audio
    "fit-audio-nan-samples": (["fit", "audio", "{nan_wav}", "--out", "{out}", *QUICK], "NaN"),
    "fit-audio-first-omega0-inf": (["fit", "audio", "{audio_src}", "-o", "first_omega0=inf", "--out", "{out}",
                                    *QUICK], "first_omega0"),
    "fit-audio-not-audio": (["fit", "audio", "{image_src}", "--out", "{out}", *QUICK], None),
    # fit video
    "fit-video-not-a-video": (["fit", "video", "{not_video}", "--out", "{out}", *QUICK], None),
    "fit-video-width-0": (["fit", "video", "{video_src}", "--width", "0", "--out", "{out}", *QUICK], "width"),
    # fit shape
    "fit-shape-nan-vertex": (["fit", "shape", "{nan_mesh}", "--out", "{out}", *QUICK], "finite"),
    "fit-shape-face-out-of-range": (["fit", "shape", "{bad_faces}", "--out", "{out}", *QUICK], None),
    "fit-shape-empty-file": (["fit", "shape", "{empty_mesh}", "--out", "{out}", *QUICK], "empty"),
    "fit-shape-relu-pe-frequencies": (["fit", "shape", "{shape_src}", "--field", "relu-pe", "-o", "frequencies=500",
                                       "--out", "{out}", *QUICK], "frequencies"),
    # fit scene
    "fit-scene-bomb-view": (["fit", "scene", "{bomb_scene}", "--out", "{out}", *QUICK], "decompression bomb"),
    "fit-scene-image-outside-folder": (["fit", "scene", "{escape_scene}", "--out", "{out}", *QUICK],
                                       "outside the scene folder"),
    "fit-scene-bad-json": (["fit", "scene", "{empty_json_scene}", "--out", "{out}", *QUICK], "JSON"),
    "fit-scene-nerf-width-0": (["fit", "scene", "{escape_scene}", "--field", "nerf", "-o", "width=0", "--out",
                                "{out}", *QUICK], "width"),
    # train
    "train-ginr-lr-nan": (["train", "ginr", "--dataset", "{nan_folder}", "--lr", "nan", "--out", "{out}",
                           "--quiet", "--device", "cpu"], "lr"),
    "train-ginr-batch-0": (["train", "ginr", "--dataset", "{nan_folder}", "--batch", "0", "--out", "{out}",
                            "--quiet", "--device", "cpu"], "batch"),
    "train-mnif-seconds-inf": (["train", "mnif", "--dataset", "{nan_folder}", "--seconds", "inf", "--out",
                                "{out}", "--quiet", "--device", "cpu"], "seconds"),
    "train-diffusion-latents-not-a-ginr-run": (["train", "diffusion", "--latents", "{image}", "--out", "{out}",
                                                "--quiet", "--device", "cpu"], None),
    "train-diffusion-ema-out-of-range": (["train", "diffusion", "--latents", "{image}", "--ema", "2", "--out",
                                          "{out}", "--quiet", "--device", "cpu"], "ema"),
    "train-inr-gan-lr-inf": (["train", "inr-gan", "--dataset", "{nan_folder}", "--lr", "inf", "--out", "{out}",
                              "--quiet", "--device", "cpu"], "lr"),
    "train-inr-gan-batch-0": (["train", "inr-gan", "--dataset", "{nan_folder}", "--batch", "0", "--out",
                               "{out}", "--quiet", "--device", "cpu"], "batch"),
    # render
    "render-size-200000": (["render", "{image}", "--size", "200000", "200000", "--out", "{work}/r.png"], "memory"),
    "render-checkpoint-of-another-width": (["render", "{other-width}", "--scale", "1", "--out", "{work}/r.png"],
                                           "do not match"),
    "render-checkpoint-of-another-field": (["render", "{other-field}", "--scale", "1", "--out", "{work}/r.png"],
                                           "do not match"),
    "render-not-a-run": (["render", "{not_a_run}", "--scale", "1", "--out", "{work}/r.png"], "not a run folder"),
    "render-config-is-a-list": (["render", "{list_config}", "--scale", "1", "--out", "{work}/r.png"], "JSON object"),
    "render-missing-run": (["render", "{work}/no-run", "--scale", "1", "--out", "{work}/r.png"], "does not exist"),
    "render-out-folder-missing": (["render", "{image}", "--scale", "1", "--out", "{work}/no/r.png"], "does not exist"),
    "render-scale-inf": (["render", "{image}", "--scale", "inf", "--out", "{work}/r.png"], "scale"),
    "render-region-nan": (["render", "{image}", "--size", "8", "8", "--region", "nan", "0", "4", "4", "--out",
                           "{work}/r.png"], "region"),
    "render-audio-with-size": (["render", "{audio}", "--size", "4", "4", "--out", "{work}/r.wav"], "audio run"),
    "render-audio-rate-0": (["render", "{audio}", "--rate", "0", "--out", "{work}/r.wav"], "rate"),
    "render-audio-rate-huge": (["render", "{audio}", "--rate", "1e15", "--out", "{work}/r.wav"], "rate"),
    "render-audio-to-png": (["render", "{audio}", "--out", "{work}/r.png"], "wav"),
    "render-video-image-name-without-frame": (["render", "{video}", "--out", "{work}/r.png"], "--frame"),
    "render-video-fps-0": (["render", "{video}", "--fps", "0", "--out", "{work}/r.mp4"], "fps"),
    "render-video-frame-size-huge": (["render", "{video}", "--frame", "1", "--size", "300000", "300000", "--out",
                                      "{work}/r.png"], "memory"),
    "render-shape-resolution-4": (["render", "{shape}", "--resolution", "4", "--out", "{work}/r.ply"], "resolution"),
    "render-shape-resolution-huge": (["render", "{shape}", "--resolution", "100000", "--out", "{work}/r.ply"],
                                     "memory"),
    "render-shape-to-png": (["render", "{shape}", "--out", "{work}/r.png"], "ply"),
    "render-image-with-orbit": (["render", "{image}", "--orbit", "--out", "{work}/r.mp4"], "orbit"),
    # export
    "export-audio-mesh": (["export", "{audio}", "--mesh", "--out", "{work}/m.ply"], "--mesh"),
    "export-image-mesh": (["export", "{image}", "--mesh", "--out", "{work}/m.ply"], "--mesh"),
    "export-bits-wrong-suffix": (["export", "{image}", "--bits", "8", "--out", "{work}/w.txt"], "safetensors"),
    "export-shape-mesh-threshold": (["export", "{shape}", "--mesh", "--threshold", "3", "--out", "{work}/m.ply"],
                                    "threshold"),
    "export-shape-mesh-resolution-2": (["export", "{shape}", "--mesh", "--resolution", "2", "--out",
                                        "{work}/m.ply"], "resolution"),
    "export-bits-with-resolution": (["export", "{video}", "--bits", "8", "--resolution", "3", "--out",
                                     "{work}/w.safetensors"], "--mesh"),
    "export-other-field": (["export", "{other-field}", "--bits", "8", "--out", "{work}/w.safetensors"],
                           "do not match"),
    "export-not-a-run": (["export", "{not_a_run}", "--bits", "8", "--out", "{work}/w.safetensors"], "not a run"),
    # eval
    "eval-fid-samples-missing": (["eval", "{image}", "--fid", "--samples", "{work}/none.npz"], "does not exist"),
    "eval-fid-samples-objects": (["eval", "{image}", "--fid", "--samples", "{objects_npz}"], "samples file"),
    "eval-fid-samples-nan": (["eval", "{image}", "--fid", "--samples", "{nan_npz}"], "NaN"),
    "eval-image-run": (["eval", "{image}"], "metrics.json"),
    "encode-audio-run": (["encode", "{audio}", "{nan_folder}", "--out", "{work}/l.safetensors"], "audio run"),
    "interpolate-shape-run": (["interpolate", "{shape}", "0", "1", "--out", "{work}/i.png"], "shape run"),
    # generate
    "generate-from-an-image-run": (["generate", "{image}", "--n", "2", "--out", "{work}/g"], None),
    "generate-missing-run": (["generate", "{work}/no-run", "--n", "2", "--out", "{work}/g"], "does not exist"),
    # make-scene
    "make-scene-nan-mesh": (["make-scene", "{nan_mesh}", "--views", "2", "--size", "8", "--out", "{work}/s",
                             "--quiet"], "finite"),
    "make-scene-views-0": (["make-scene", "{shape_src}", "--views", "0", "--out", "{work}/s", "--quiet"], "views"),
    "make-scene-missing-mesh": (["make-scene", "{work}/none.obj", "--out", "{work}/s", "--quiet"], "does not exist"),
}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and mtime (ns), and every folder. (A folder's own mtime is left
    out: checking that a folder can be written, or making a run folder and removing it again, changes its
    parent's mtime and nothing else.)"""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, -1)
            for p in sorted(root.rglob("*"))}


def test_there_are_at_least_40_cases_across_the_commands():
    assert len(CASES) >= 40
    commands = {tuple(argv[:2]) if argv[0] in ("fit", "train") else argv[0] for argv, _ in CASES.values()}
    assert {("fit", s) for s in ("image", "images", "audio", "video", "shape", "scene")} <= commands
    assert {("train", j) for j in ("ginr", "mnif", "diffusion", "inr-gan")} <= commands
    assert {"render", "export", "eval", "generate", "make-scene"} <= commands


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_one_sentence_and_touches_nothing(case, hostile, monkeypatch):
    argv, match = CASES[case]
    paths = {**{k: str(v) for k, v in hostile.items()}, "image_src": str(hostile["root"] / "sources" / "image.png"),
             "audio_src": str(hostile["root"] / "sources" / "tone.wav"),
             "video_src": str(hostile["root"] / "sources" / "square.mp4"),
             "shape_src": str(hostile["root"] / "sources" / "sphere.off"), "out": str(hostile["work"] / case)}
    argv = [a.format(**paths) for a in argv]
    # The huge PNG must be refused on any machine, so the memory it may use is fixed below what decoding
    # it takes (about 10 GB at the measured 12 bytes per pixel-channel).
    monkeypatch.setattr("nfields.data.image.available_memory", lambda: 4 << 30)
    monkeypatch.chdir(hostile["work"])
    before = snapshot(hostile["root"])
    result = run_cli_quietly(*argv)
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfields: error: "), result.err
    if match:
        import re

        assert re.search(match, lines[0]), lines[0]
    assert snapshot(hostile["root"]) == before
