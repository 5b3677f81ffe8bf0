"""Scenes: rays, volume rendering against closed forms, Plücker coordinates, scene loading, fitting
a tiny analytic scene with every scene field, rendering orbits, extracting meshes, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nfields.data.scene import load_scene
from nfields.fields.radiance import SCENE_FIELDS, SceneBounds, make_scene_field
from nfields.data.cameras import focal_length, look_at, orbit_poses, project
from nfields.render.rays import camera_rays, plucker
from nfields.render.volume import composite, composite_packed, sample_pdf, stratified_samples

from scene_helpers import write_sphere_scene


# -- rays ------------------------------------------------------------------------------------------

def test_rays_round_trip_pixel_to_ray_to_pixel():
    pose = look_at(np.array([2.0, -3.0, 1.5]))
    height, width, angle = 12, 20, 0.9
    origins, directions = camera_rays(torch.tensor(pose), height, width, focal_length(width, angle))
    assert torch.allclose(directions.norm(dim=-1), torch.ones(height, width, dtype=torch.float64))
    points = (origins + 3.7 * directions).reshape(-1, 3).numpy()
    pixels = project(points, pose, width, angle, height).reshape(height, width, 2)
    rows, cols = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    assert np.allclose(pixels[..., 0], cols, atol=1e-9) and np.allclose(pixels[..., 1], rows, atol=1e-9)
    pose = torch.tensor(pose)
    focal = focal_length(width, angle)
    # The centre pixel looks at the target (the origin) when the size is odd.
    o, d = camera_rays(pose, 11, 11, focal)
    assert torch.allclose(torch.linalg.cross(d[5, 5], -o[5, 5] / o[5, 5].norm(), dim=-1), torch.zeros(3,
                          dtype=torch.float64), atol=1e-9)


def test_plucker_coordinates_ignore_where_on_the_ray_the_origin_is():
    torch.manual_seed(0)
    origins, directions = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    moved = origins + torch.randn(50, 1, dtype=torch.float64) * 5 * directions
    assert torch.allclose(plucker(origins, directions), plucker(moved, directions), atol=1e-10)
    assert torch.allclose(plucker(origins, directions), plucker(origins, 3.0 * directions), atol=1e-10)
    other = plucker(origins + torch.tensor([0.0, 0.0, 0.1], dtype=torch.float64), directions)
    assert not torch.allclose(plucker(origins, directions), other, atol=1e-3)


def test_focal_from_field_of_view():
    assert focal_length(800, 0.6911112070083618) == pytest.approx(1111.1, abs=0.1)  # NeRF-synthetic's lego


# -- volume rendering against closed forms ----------------------------------------------------------

def _slab(t: torch.Tensor, start: float, end: float, density: float) -> torch.Tensor:
    return torch.where((t >= start) & (t <= end), torch.full_like(t, density), torch.zeros_like(t))


def test_constant_density_slab_matches_beer_lambert():
    start, end, density = 1.0, 1.6, 2.5
    t = torch.linspace(0.0, 3.0, 30001, dtype=torch.float64)[None]
    sigma = _slab(t, start, end, density)
    color = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    out = composite(sigma, color.expand(1, t.shape[1], 3), t, torch.ones(3, dtype=torch.float64))
    opacity = 1 - math.exp(-density * (end - start))
    assert float(out.opacity) == pytest.approx(opacity, abs=1e-3)
    assert torch.allclose(out.rgb[0], color * opacity + (1 - opacity), atol=1e-3)
    # Expected depth: integral of t * sigma * T(t) over the slab, in closed form.
    a = density
    expected = (start - (end + 1 / a) * math.exp(-a * (end - start)) + 1 / a)
    assert float(out.depth) == pytest.approx(expected, abs=2e-3)


def test_packed_compositing_equals_dense_compositing():
    torch.manual_seed(1)
    sigma = torch.rand(3, 40, dtype=torch.float64) * 3
    rgb = torch.rand(3, 40, 3, dtype=torch.float64)
    t = torch.sort(torch.rand(3, 40, dtype=torch.float64) * 4, -1).values
    dense = composite(sigma[:, :-1], rgb[:, :-1], t[:, :-1], torch.ones(3, dtype=torch.float64))
    # Packed with the same intervals (the dense layout's last interval is infinite: drop it in both).
    dense_truncated = composite(torch.cat([sigma[:, :-2], torch.zeros_like(sigma[:, :1])], 1), rgb[:, :-1],
                                t[:, :-1], torch.ones(3, dtype=torch.float64))
    deltas = (t[:, 1:-1] - t[:, :-2]).reshape(-1)
    index = torch.arange(3).repeat_interleave(38)
    packed = composite_packed(sigma[:, :-2].reshape(-1), rgb[:, :-2].reshape(-1, 3), t[:, :-2].reshape(-1), deltas,
                              index, 3, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(packed.rgb, dense_truncated.rgb, atol=1e-8)
    assert torch.allclose(packed.opacity, dense_truncated.opacity, atol=1e-8)
    assert not torch.allclose(dense.opacity, torch.zeros(3, dtype=torch.float64))


def test_uniform_sphere_opacity_follows_the_chord_length():
    radius, density = 1.0, 1.3
    offsets = torch.tensor([0.0, 0.5, 0.9, 1.2], dtype=torch.float64)
    origins = torch.stack([offsets, torch.zeros(4, dtype=torch.float64), torch.full((4,), -3.0, dtype=torch.float64)], -1)
    directions = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(4, 3)
    t = torch.linspace(0.0, 6.0, 20001, dtype=torch.float64).expand(4, -1)
    points = origins[:, None] + t[..., None] * directions[:, None]
    sigma = torch.where(points.norm(dim=-1) <= radius, torch.full_like(t, density), torch.zeros_like(t))
    out = composite(sigma, torch.zeros(4, t.shape[1], 3, dtype=torch.float64), t)
    chord = 2 * torch.sqrt(torch.clamp(radius**2 - offsets**2, min=0))
    assert torch.allclose(out.opacity, 1 - torch.exp(-density * chord), atol=2e-3)


def test_stratified_and_hierarchical_samples():
    t = stratified_samples(2.0, 6.0, 5, 64, jitter=True)
    assert t.shape == (5, 64) and (t >= 2).all() and (t <= 6).all() and (t.diff(dim=-1) >= 0).all()
    assert torch.allclose(stratified_samples(2.0, 6.0, 2, 4, jitter=False)[0], torch.tensor([2.0, 10 / 3, 14 / 3, 6.0]))
    bins = torch.linspace(0, 1, 11).expand(2, 11)
    weights = torch.zeros(2, 10)
    weights[:, 7] = 1.0
    drawn = sample_pdf(bins, weights, 200, deterministic=False)
    assert ((drawn >= 0.7) & (drawn <= 0.8)).float().mean() > 0.95


# -- loading ---------------------------------------------------------------------------------------

def test_load_scene_reads_the_nerf_synthetic_layout(tmp_path):
    root = write_sphere_scene(tmp_path / "sphere", train_views=3, test_views=2, size=16)
    scene = load_scene(root)
    assert set(scene.views) == {"train", "test"}
    train = scene.split("train")
    assert train.images.shape == (3, 16, 16, 3) and train.poses.shape == (3, 4, 4)
    assert (scene.near, scene.far, scene.bound) == (2.0, 6.0, 1.5)
    assert float(train.images[0, 0, 0].min()) == 1.0  # transparent corner -> white
    assert train.focal == pytest.approx(8 / math.tan(0.5 * 0.6911))
    half = load_scene(root, size=8)
    assert half.split("train").images.shape == (3, 8, 8, 3)


# -- fitting every field on a tiny scene -------------------------------------------------------------

SMALL = {
    "nerf": dict(width=64, depth=4, skip=2, coarse_samples=24, fine_samples=24, frequencies=6),
    "lightfield": dict(width=128, hidden_layers=3),
}


@pytest.fixture(scope="module")
def sphere_scene(tmp_path_factory):
    return load_scene(write_sphere_scene(tmp_path_factory.mktemp("scene") / "sphere", 8, 2, 32))


def _fit(scene, name, steps):
    from nfields.jobs.fit_scene import fit_scene

    torch.manual_seed(0)
    model = make_scene_field(name, SceneBounds(scene.near, scene.far, scene.bound), **SMALL[name])
    return fit_scene(scene, model, steps=steps, batch_rays=256, device="cpu", progress=False, lr=2e-3,
                     precrop_steps=50)


def test_tiny_scene_nerf_renders_unseen_views(sphere_scene):
    fitted, trainer = _fit(sphere_scene, "nerf", 200)
    # Measured 20.4 dB on held-out views (8 training views of 32², 200 steps, ~13 s on 2 cores).
    assert fitted.metrics["psnr"] > 18.0, fitted.metrics
    assert len(fitted.metrics["psnr_per_view"]) == 2 and len(fitted.renders) == 2
    rgb, depth, opacity = fitted.render(torch.tensor(orbit_poses(1)[0]), 16, 16)
    assert rgb.shape == (16, 16, 3) and opacity[8, 8] > 0.9 > opacity[0, 0]
    # The depth where the centre ray stops: the sphere's near side, 4 - 0.8 from the camera.
    assert depth[8, 8] / opacity[8, 8] == pytest.approx(3.2, abs=0.4)  # 3.47 after these 200 steps


def test_tiny_scene_light_field_fits_its_views(sphere_scene):
    """A single-scene light field memorises its views (measured 34 dB on the training rays) but, with no
    prior, does not interpolate between 8 of them (14 dB held out): why LFN needs a learned prior."""
    fitted, trainer = _fit(sphere_scene, "lightfield", 400)
    train = sphere_scene.split("train")
    rgb, _, _ = fitted.render(train.poses[0])
    from nfields.metrics import psnr

    assert psnr(torch.from_numpy(rgb), train.images[0]) > 27.0


def test_scene_fields_are_registered():
    assert {"nerf", "lightfield"} <= set(SCENE_FIELDS.names())


# -- the command line: fit, render, export, bad input -------------------------------------------------

from conftest import run_cli_quietly  # noqa: E402

NERF_FLAGS = ["--field", "nerf", "-o", "width=32", "-o", "depth=2", "-o", "skip=1", "-o", "coarse_samples=16",
              "-o", "fine_samples=16", "-o", "frequencies=4", "--batch-rays", "128", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene_run")
    scene = write_sphere_scene(root / "sphere", 4, 2, 16)
    out = root / "run"
    result = run_cli_quietly("fit", "scene", scene, *NERF_FLAGS, "--steps", "30", "--out", out)
    assert result.code == 0, result.err
    return scene, out


def test_fit_scene_writes_a_run_folder(scene_run):
    scene, out = scene_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 30 and len(metrics["psnr_per_view"]) == 2 and metrics["rays_per_second"] > 0
    for name in ("config.json", "test_views.png", "curve.png", "test/r_0.png", "test/r_1.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["scene"]["height"] == 16 and config["field_spec"]["name"] == "nerf"
    assert config["kind"] == "fit-scene" and config["format"] == 1


def test_render_orbit_pose_and_depth(scene_run, cli, tmp_path):
    from nfields.data.video import load_video

    _, out = scene_run
    result = cli("render", out, "--orbit", "--frames", "4", "--size", "16", "16", "--out", tmp_path / "orbit.mp4",
                 "--device", "cpu")
    assert result.code == 0, result.err
    assert load_video(tmp_path / "orbit.mp4").num_frames == 4
    wrong = cli("render", out, "--orbit", "--out", tmp_path / "orbit.png")
    assert wrong.code == 2 and ".mp4" in wrong.err and not (tmp_path / "orbit.png").exists()
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps(look_at(np.array([0.0, -4.0, 1.0])).tolist()))
    assert cli("render", out, "--pose", pose, "--depth", "--out", tmp_path / "depth.png", "--device", "cpu").code == 0
    assert (tmp_path / "depth.png").is_file()
    scene, _ = scene_run
    views = cli("render", out, "--pose", scene / "transforms_test.json", "--out", tmp_path / "views", "--device", "cpu")
    assert views.code == 0 and sorted(p.name for p in (tmp_path / "views").iterdir()) == ["r_0.png", "r_1.png"]


def test_export_mesh_of_an_analytic_density(tmp_path, monkeypatch):
    """Marching cubes on a radiance field's density: a sphere of density 100 inside radius 0.8 gives a
    mesh whose vertices lie at radius 0.8 (the scene's world units, not the grid's)."""
    from nfields.jobs import scene_outputs
    from nfields.jobs.fit_scene import FittedScene
    from nfields.render.mesh import read_ply

    model = make_scene_field("nerf", SceneBounds(), width=8, depth=2, skip=1)
    monkeypatch.setattr(model, "density", lambda p: 100.0 * (p.norm(dim=-1) < 0.8).float())
    monkeypatch.setattr(scene_outputs, "load_fitted_scene", lambda run, device: FittedScene(model, 8, 8, 0.7))
    report = scene_outputs.export_scene_mesh(tmp_path, tmp_path / "mesh.ply", resolution=64)
    vertices, faces = read_ply(tmp_path / "mesh.ply")
    assert report["faces"] == len(faces) > 100
    assert np.abs(np.linalg.norm(vertices, axis=1) - 0.8).max() < 0.06


def test_export_mesh_cli_and_light_field_has_no_depth(scene_run, cli, tmp_path):
    _, out = scene_run
    result = cli("export", out, "--mesh", "--resolution", "16", "--threshold", "1e9", "--out", tmp_path / "m.ply")
    assert result.code == 2 and "never crosses" in result.err and not (tmp_path / "m.ply").exists()
    scene = write_sphere_scene(tmp_path / "s", 2, 1, 8)
    lf = tmp_path / "lf"
    assert cli("fit", "scene", scene, "--field", "lightfield", "--width", "16", "--hidden-layers", "1", "--steps", "5",
               "--batch-rays", "32", "--device", "cpu", "--quiet", "--out", lf).code == 0
    depth = cli("render", lf, "--orbit", "--frames", "2", "--depth", "--out", tmp_path / "d.mp4")
    assert depth.code == 2 and "no density" in depth.err
    assert cli("export", lf, "--mesh", "--out", tmp_path / "lf.ply").code == 2


def _broken(tmp_path, name, edit):
    root = write_sphere_scene(tmp_path / name, 2, 1, 8)
    edit(root)
    return root


def test_bad_scenes_give_one_sentence_and_exit_2(cli, tmp_path):
    def drop_image(root):
        (root / "train" / "r_1.png").unlink()

    def malformed(root):
        (root / "transforms_train.json").write_text("{not json")

    def no_angle(root):
        data = json.loads((root / "transforms_train.json").read_text())
        del data["camera_angle_x"]
        (root / "transforms_train.json").write_text(json.dumps(data))

    def singular(root):
        data = json.loads((root / "transforms_train.json").read_text())
        data["frames"][0]["transform_matrix"] = np.zeros((4, 4)).tolist()
        (root / "transforms_train.json").write_text(json.dumps(data))

    def other_size(root):
        from PIL import Image

        Image.new("RGBA", (9, 8)).save(root / "train" / "r_1.png")

    cases = {"missing": (tmp_path / "nowhere", "does not exist"),
             "empty": (tmp_path / "emptydir", "no transforms_train.json"),
             "image": (_broken(tmp_path, "a", drop_image), "no such image"),
             "json": (_broken(tmp_path, "b", malformed), "not valid JSON"),
             "angle": (_broken(tmp_path, "c", no_angle), "camera_angle_x"),
             "pose": (_broken(tmp_path, "d", singular), "not invertible"),
             "size": (_broken(tmp_path, "e", other_size), "share one size")}
    (tmp_path / "emptydir").mkdir()
    for name, (source, message) in cases.items():
        out = tmp_path / f"run-{name}"
        result = cli("fit", "scene", source, "--field", "lightfield", "--steps", "2", "--device", "cpu", "--quiet",
                     "--out", out)
        assert result.code == 2, (name, result.err)
        assert message in result.err and "Traceback" not in result.err, (name, result.err)
        assert len(result.err.strip().splitlines()) == 1, result.err
        assert not out.exists(), name
    unknown = cli("fit", "scene", tmp_path / "a", "--field", "nerff", "--out", tmp_path / "x")
    assert unknown.code == 2 and "did you mean 'nerf'" in unknown.err


def test_precrop_samples_only_the_centre_of_each_view():
    from nfields.jobs.fit_scene import central_rays

    index = central_rays(2, 8, 10, 0.5)
    view, pixel = index // 80, index % 80
    rows, cols = pixel // 10, pixel % 10
    assert set(view.tolist()) == {0, 1} and len(index) == 2 * 4 * 5
    assert rows.min() == 2 and rows.max() == 5 and cols.min() == 2 and cols.max() == 6


def test_fit_scene_resumes_where_it_stopped(cli, tmp_path):
    scene = write_sphere_scene(tmp_path / "s", 2, 1, 8)
    flags = ["--field", "hashgrid", "-o", "log2_table_size=10", "-o", "grid_resolution=16", "-o", "levels=4",
             "-o", "march_steps=64", "--batch-rays", "32", "--device", "cpu", "--quiet", "--checkpoint-every", "5",
             "--out", tmp_path / "run"]
    assert cli("fit", "scene", scene, "--steps", "10", *flags).code == 0
    resumed = cli("fit", "scene", "--resume", "--steps", "20", *flags)
    assert resumed.code == 0, resumed.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 20
    changed = cli("fit", "scene", "--resume", "--steps", "30", *flags[:-2], "--batch-rays", "64",
                  "--out", tmp_path / "run")
    assert changed.code == 2 and "batch_rays" in changed.err
