"""`nfields make-scene`: cameras, mitsuba's frame against our intrinsics, the NeRF-synthetic layout,
pybullet's objects, atomic writes and every bad input. Tiny renders (24-32 px, few samples)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nfields.data import cameras, catalog
from nfields.data import make_scene as ms

from conftest import subprocess_env
from test_cli import assert_user_error

pytest.importorskip("mitsuba")
trimesh = pytest.importorskip("trimesh")

TINY = ["--samples", "8", "--quiet"]
HAVE_PYBULLET = catalog.ENTRIES["duck"].path() is not None


def read_png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def on_white(rgba: np.ndarray) -> np.ndarray:
    values = rgba.astype(np.float64) / 255
    return values[..., :3] * values[..., 3:] + 1 - values[..., 3:]


def centroid(weights: np.ndarray) -> np.ndarray:
    """(column, row) of a weight image, pixel i's centre at i + 0.5."""
    rows, cols = np.mgrid[0:weights.shape[0], 0:weights.shape[1]] + 0.5
    return np.array([(weights * cols).sum(), (weights * rows).sum()]) / weights.sum()


def write_two_cubes(path):
    """A y-up OBJ: a red unit cube at the origin and a small green cube off to +x and +y (a .mtl beside it)."""
    path.with_suffix(".mtl").write_text("newmtl red\nKd 1 0 0\nnewmtl green\nKd 0 1 0\n")
    lines = [f"mtllib {path.with_suffix('.mtl').name}"]
    offset = 0
    for material, side, centre in (("red", 1.0, (0, 0, 0)), ("green", 0.4, (1.0, 0.5, 0.0))):
        box = trimesh.creation.box(extents=[side] * 3)
        lines += [f"v {x + centre[0]} {y + centre[1]} {z + centre[2]}" for x, y, z in box.vertices]
        lines.append(f"usemtl {material}")
        lines += [f"f {a + 1 + offset} {b + 1 + offset} {c + 1 + offset}" for a, b, c in box.faces]
        offset += len(box.vertices)
    path.write_text("\n".join(lines) + "\n")
    # Where the green cube's centre lands: bounding box x [-0.5, 1.2], y [-0.5, 0.7], z [-0.5, 0.5], so the
    # centre is (0.35, 0.1, 0) and the scale 2 / 1.7; then y-up (x, y, z) -> z-up (x, -z, y).
    scale = 2 / 1.7
    return np.array([0.65, -0.0, 0.4]) * scale


# -- cameras ------------------------------------------------------------------------------------------------

def test_cameras_follow_the_nerf_convention_and_the_seed():
    poses = cameras.random_poses(200, np.random.default_rng(0))
    rotation, position = poses[:, :3, :3], poses[:, :3, 3]
    assert np.allclose(rotation @ rotation.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rotation), 1)
    assert np.allclose(np.linalg.norm(position, axis=1), cameras.RADIUS)
    # the camera looks along its -z at the origin, its +y (image up) leans to world +z, its +x is horizontal
    assert np.allclose(-rotation[:, :, 2], -position / cameras.RADIUS)
    assert (rotation[:, 2, 1] > 0).all() and np.allclose(rotation[:, 2, 0], 0)
    elevation = np.degrees(np.arcsin(position[:, 2] / cameras.RADIUS))
    assert elevation.min() >= 5 and elevation.max() <= 85 and elevation.max() - elevation.min() > 60
    assert np.array_equal(poses, cameras.random_poses(200, np.random.default_rng(0)))
    orbit = cameras.orbit_poses(8)
    assert np.allclose(orbit[:, 2, 3], cameras.RADIUS * math.sin(math.radians(30)))
    azimuths = np.degrees(np.arctan2(orbit[:, 1, 3], orbit[:, 0, 3])) % 360
    assert np.allclose(azimuths, np.arange(8) * 45)
    # a camera on the -y axis has world +x on its right and world +z up in its image
    col, row = cameras.project(np.array([[0.5, 0, 0.5]]), cameras.look_at([0, -4, 0]), 32)[0]
    assert col > 16 and row < 16


def test_mitsuba_draws_points_where_the_intrinsics_project_them():
    """An off-centre sphere from several cameras: the centroid of mitsuba's alpha lands where `project`
    puts the sphere's centre (within 0.25 px at 32^2), and depth is the distance along the camera axis."""
    centre, radius, size = np.array([0.9, -0.7, 0.5]), 0.25, 32
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    part = ms.MeshPart((np.asarray(sphere.vertices) + centre).astype(np.float32), np.asarray(sphere.faces, np.uint32))
    renderer = ms.Renderer(ms.SceneMesh("sphere", [part]), size, samples=16, depth=True)
    poses = np.concatenate([cameras.random_poses(4, np.random.default_rng(1)), cameras.orbit_poses(2)])
    checked = 0
    for pose in poses:
        rgba, depth = renderer.render(pose)
        expected = cameras.project(centre[None], pose, size)[0]
        if not ((expected > 4) & (expected < size - 4)).all():
            continue  # the image's border cuts the sphere: its centroid moves
        checked += 1
        assert np.abs(expected - size / 2).max() > 2  # off-centre: a flip would show
        assert np.abs(centroid(rgba[..., 3].astype(np.float64)) - expected).max() < 0.25  # measured: < 0.1
        col, row = np.floor(expected).astype(int)
        to_centre = centre - pose[:3, 3]
        axis = -pose[:3, 2]
        # the ray through that pixel meets the near side of the sphere ~ |c| - r away (exact for the centre ray)
        assert abs(depth[row, col] - (np.linalg.norm(to_centre) - radius) * (to_centre @ axis) /
                   np.linalg.norm(to_centre)) < 0.03
        assert (depth[rgba[..., 3] == 0] == 0).all()
    assert checked >= 4


def test_colour_is_straight_not_premultiplied():
    """A flat grey square facing the camera: its partly covered edge pixels have the interior's colour."""
    pose = cameras.look_at([0, -4, 1.5])
    right, up = pose[:3, 0], pose[:3, 1]
    corners = np.array([-right - up, right - up, right + up, -right + up]) * 0.63
    part = ms.MeshPart(corners.astype(np.float32), np.array([[0, 1, 2], [0, 2, 3]], np.uint32), smooth=False)
    rgba, _ = ms.Renderer(ms.SceneMesh("square", [part]), 32, samples=32).render(pose)
    alpha = rgba[..., 3]
    interior, edge = rgba[alpha == 255, 0].astype(float), rgba[(alpha > 40) & (alpha < 200), 0].astype(float)
    assert len(interior) > 50 and len(edge) > 8
    assert abs(np.median(edge) - np.median(interior)) < 0.1 * np.median(interior)
    assert (alpha[0, 0], alpha[-1, -1]) == (0, 0)


def test_mesh_is_normalised_rotated_and_coloured(tmp_path):
    green = write_two_cubes(tmp_path / "cubes.obj")
    mesh = ms.load_scene_mesh(tmp_path / "cubes.obj")
    points = np.concatenate([p.vertices for p in mesh.parts])
    assert np.allclose(points.max(0) - points.min(0), np.array([1.7, 1.0, 1.2]) * 2 / 1.7, atol=1e-6)
    assert np.allclose(points.max(0) + points.min(0), 0, atol=1e-6)
    colours = sorted(p.color for p in mesh.parts)
    assert colours == [(0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]
    small = next(p for p in mesh.parts if p.color == (0.0, 1.0, 0.0))
    assert np.allclose(small.vertices.mean(0), green, atol=1e-6)
    z_up = ms.load_scene_mesh(tmp_path / "cubes.obj", up="z")
    small_z = next(p for p in z_up.parts if p.color == (0.0, 1.0, 0.0))
    assert np.allclose(small_z.vertices.mean(0), np.array([0.65, 0.4, 0.0]) * 2 / 1.7, atol=1e-6)
    ply = tmp_path / "coloured.ply"
    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([0, 0, 255, 255], (len(box.vertices), 1))
    box.export(ply)
    part = ms.load_scene_mesh(ply).parts[0]
    assert part.vertex_colors is not None and np.allclose(part.vertex_colors[0], [0, 0, 1])


# -- the command ------------------------------------------------------------------------------------------

def test_cli_writes_the_nerf_synthetic_layout(cli, tmp_path):
    green = write_two_cubes(tmp_path / "cubes.obj")
    size = 32
    result = cli("make-scene", tmp_path / "cubes.obj", "--views", "3", "--size", size, "--test-views", "4",
                 "--val-views", "1", "--depth", "--out", "scene", *TINY)
    assert result.code == 0, result.err
    assert "3 train, 1 val, 4 test" in result.out
    scene = tmp_path / "scene"
    assert sorted(p.name for p in scene.iterdir()) == ["test", "train", "transforms_test.json",
                                                        "transforms_train.json", "transforms_val.json", "val"]
    checked = 0
    for split, count in (("train", 3), ("val", 1), ("test", 4)):
        meta = json.loads((scene / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == pytest.approx(0.6911112)
        assert (meta["near"], meta["far"], meta["bound"], meta["depth_scale"]) == (2.0, 6.0, 1.5, 1e-4)
        assert meta["source"].endswith("cubes.obj") and meta["renderer"].startswith("mitsuba 3")
        assert "8 spp" in meta["renderer"]
        assert [f["file_path"] for f in meta["frames"]] == [f"./{split}/r_{i}" for i in range(count)]
        for frame in meta["frames"]:
            pose = np.array(frame["transform_matrix"])
            assert pose.shape == (4, 4) and np.allclose(pose[3], [0, 0, 0, 1])
            with Image.open(scene / (frame["file_path"] + ".png")) as img:
                assert img.mode == "RGBA" and img.size == (size, size)
                rgba = np.asarray(img)
            alpha = rgba[..., 3]
            assert alpha[[0, 0, -1, -1], [0, -1, 0, -1]].max() <= 2  # transparent corners ...
            assert alpha[size // 2 - 1: size // 2 + 1, size // 2 - 1: size // 2 + 1].min() >= 250  # ... covered centre
            with Image.open(scene / frame["depth_file_path"]) as img:
                assert img.mode.startswith("I") and frame["depth_file_path"] == f"./{split}/r_{frame['file_path'][-1]}_depth.png"
                depth = np.asarray(img).astype(np.float64) * meta["depth_scale"]
            assert (depth[alpha == 0] == 0).all()
            assert cameras.RADIUS - math.sqrt(3) < depth[size // 2, size // 2] < cameras.RADIUS
            # the green cube (pure hue, so shading keeps it green) is drawn where the pose projects it
            colour = on_white(rgba)
            mask = (alpha > 128) & (colour[..., 1] > colour[..., 0] + 0.15)
            expected = cameras.project(green[None], pose, size)[0]
            if mask.sum() >= 12 and split == "test" and frame["file_path"].endswith(("r_0", "r_1", "r_3")):
                assert np.abs(centroid(mask.astype(float)) - expected).max() < 1.5
                checked += 1
    assert checked == 3  # the test circle's views at 0, 90 and 270 degrees see the green cube whole


@pytest.mark.skipif(not HAVE_PYBULLET, reason="pybullet is not installed")
def test_builtin_duck_is_textured(cli, tmp_path):
    result = cli("make-scene", "duck", "--views", "1", "--size", "32", "--test-views", "1", "--val-views", "0",
                 "--out", "duck", *TINY)
    assert result.code == 0, result.err
    assert not (tmp_path / "duck" / "transforms_val.json").exists()
    rgba = read_png(tmp_path / "duck" / "test" / "r_0.png")
    colour = rgba[rgba[..., 3] == 255, :3].astype(float)
    assert len(colour) > 100 and np.median(colour[:, 0]) > 1.5 * np.median(colour[:, 2])  # yellow, not grey


@pytest.mark.skipif(not HAVE_PYBULLET, reason="pybullet is not installed")
def test_objects_are_one_scene_each_coloured_from_their_urdf(cli, tmp_path):
    result = cli("make-scene", "--objects", "2", "--views", "2", "--size", "24", "--test-views", "1",
                 "--out", "objects", "--samples", "4", "--quiet")
    assert result.code == 0, result.err
    out = tmp_path / "objects"
    assert sorted(p.name for p in out.iterdir()) == ["000", "001", "objects.json"]
    index = json.loads((out / "objects.json").read_text())
    assert [o["name"] for o in index["objects"]] == ["000", "001"] and index["skipped"] == []
    assert index["objects"][0]["mesh"].endswith("random_urdfs/000/000.obj")
    assert index["objects"][0]["color"] == [0.04, 0.07, 0.91]  # 000.urdf's <color rgba>
    for name in ("000", "001"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["test", "train", "transforms_test.json",
                                                                   "transforms_train.json"]
    rgba = read_png(out / "000" / "train" / "r_0.png")
    colour = rgba[rgba[..., 3] > 200, :3].astype(float)
    assert len(colour) and colour[:, 2].mean() > 2 * colour[:, 0].mean()  # 000 is blue
    first = json.loads((out / "000" / "transforms_train.json").read_text())["frames"][0]["transform_matrix"]
    second = json.loads((out / "001" / "transforms_train.json").read_text())["frames"][0]["transform_matrix"]
    assert first != second  # each object has its own cameras


def test_overwrite_replaces_and_a_failure_leaves_nothing(cli, tmp_path, monkeypatch):
    write_two_cubes(tmp_path / "cubes.obj")
    args = ("make-scene", tmp_path / "cubes.obj", "--views", "1", "--size", "16", "--test-views", "1",
            "--val-views", "0", "--out", "scene", *TINY)
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "old.txt").write_text("old")
    assert_user_error(cli(*args), match="--overwrite")
    assert_user_error(cli(*args, "--overwrite"), match="holds no scene")  # --overwrite replaces only a scene
    assert (tmp_path / "scene" / "old.txt").read_text() == "old"
    (tmp_path / "scene" / "transforms_train.json").write_text("{}")
    assert cli(*args, "--overwrite").code == 0
    assert not (tmp_path / "scene" / "old.txt").exists() and (tmp_path / "scene" / "transforms_train.json").exists()

    def interrupted(self, pose, seed=0):
        raise KeyboardInterrupt

    killed = tmp_path / ".scene.partial-999999999-1"  # what a SIGKILLed run leaves: the next run removes it
    killed.mkdir()
    assert cli(*args, "--overwrite").code == 0 and not killed.exists()

    monkeypatch.setattr(ms.Renderer, "render", interrupted)
    assert cli(*args[:-4], "fresh", *TINY).code == 130
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cubes.mtl", "cubes.obj", "scene"]  # no partial folders


def case_args(case: str, tmp_path, monkeypatch) -> list:
    good = tmp_path / "cubes.obj"
    write_two_cubes(good)
    if case == "missing":
        return [tmp_path / "nope.obj"]
    if case == "empty":
        (tmp_path / "empty.obj").write_text("")
        return [tmp_path / "empty.obj"]
    if case == "garbage":
        (tmp_path / "bad.glb").write_bytes(b"\x00\x01 not a mesh at all")
        return [tmp_path / "bad.glb"]
    if case == "no-faces":
        (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
        return [tmp_path / "points.obj"]
    if case == "suffix":
        (tmp_path / "mesh.txt").write_text("hello")
        return [tmp_path / "mesh.txt"]
    if case == "unknown":
        return ["bunnny"]
    if case == "not-a-mesh":
        return ["camera"]
    if case == "views":
        return [good, "--views", "0"]
    if case == "size":
        return [good, "--size", "-3"]
    if case == "samples":
        return [good, "--samples", "0"]
    if case == "objects":
        return ["--objects", "0"]
    if case == "objects-and-source":
        return [good, "--objects", "2"]
    if case == "neither":
        return []
    if case == "too-many-objects":
        return ["--objects", "1001"]
    if case == "no-mitsuba":
        monkeypatch.setitem(sys.modules, "mitsuba", None)
        return [good]
    if case == "out-is-a-file":
        (tmp_path / "scene").write_text("x")
        return [good]
    raise AssertionError(case)


@pytest.mark.parametrize("case,match", [
    ("missing", "does not exist"), ("empty", "empty"), ("garbage", "cannot read"), ("no-faces", "no triangles"),
    ("suffix", "OBJ, PLY"), ("unknown", "did you mean 'bunny'"), ("not-a-mesh", "built-in mesh"),
    ("views", "--views"), ("size", "--size"), ("samples", "--samples"), ("objects", "--objects"),
    ("objects-and-source", "not both"), ("neither", "SOURCE"), ("too-many-objects", "1000"),
    ("no-mitsuba", "pip install mitsuba"), ("out-is-a-file", "is a file")])
def test_bad_input_is_one_sentence_exit_2_and_nothing_written(cli, tmp_path, monkeypatch, case, match):
    if case == "too-many-objects" and not HAVE_PYBULLET:
        pytest.skip("pybullet is not installed")
    args = case_args(case, tmp_path, monkeypatch)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_user_error(cli("make-scene", *TINY, *args, "--out", "scene"), match=match)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing new: no scene, no partial folder


def test_package_imports_without_mitsuba():
    code = ("import sys; sys.modules['mitsuba'] = None; import nfields.data.make_scene, nfields.cli.main; "
            "nfields.cli.main.build_parser(); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_sigkill_leaves_no_scene(nfields_process, tmp_path):
    import signal
    import time

    write_two_cubes(tmp_path / "cubes.obj")
    proc = nfields_process("make-scene", tmp_path / "cubes.obj", "--views", "5000", "--size", "16", "--out", "scene",
                           "--samples", "1", "--quiet")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".scene.partial-*/train/r_3.png")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "scene").exists() and list(tmp_path.glob(".scene.partial-*"))
