"""The built-in voxel dataset (pybullet's objects as solid occupancy): voxelisation, split, cache, marching
cubes, surface points, pictures and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nfields import NfieldsError, catalog
from nfields.data import voxels
from nfields.data.voxels import (load_voxels, occupancy_to_mesh, save_mesh, save_voxel_grid, surface_points,
                                 voxel_centres, voxelise_mesh)
from nfields.render.mesh import read_ply

HAVE_PYBULLET = catalog.ENTRIES["voxels"].path() is not None


def _sphere(radius: float = 0.6):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _ball(resolution: int, radius: float) -> np.ndarray:
    return (voxel_centres(resolution).norm(dim=-1) <= radius).numpy().astype(np.uint8)


def test_voxel_centres_order_and_range():
    centres = voxel_centres(4)
    assert centres.shape == (4, 4, 4, 3) and centres.dtype == torch.float32
    assert torch.allclose(centres[:, 0, 0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.equal(centres[1, 2, 3], torch.tensor([-0.25, 0.25, 0.75]))  # [x, y, z] indexing


def test_sphere_and_cube_volume_fractions():
    occupancy = voxelise_mesh(*_sphere(0.6), 32)
    assert occupancy.dtype == np.uint8 and occupancy.shape == (32, 32, 32)
    assert set(np.unique(occupancy)) == {0, 1}
    expected = 4 / 3 * math.pi * 0.6 ** 3 / 8  # of the [-1, 1]^3 cube; the icosphere is a little smaller
    assert occupancy.mean() == pytest.approx(expected, rel=0.04)
    assert occupancy[16, 16, 16] == 1 and occupancy[0, 0, 0] == 0
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 0.5, 1.5))  # every face lies between voxel centres at R = 16
    occupancy = voxelise_mesh(np.asarray(box.vertices), np.asarray(box.faces), 16)
    assert occupancy.sum() == 8 * 4 * 12  # centres inside: |x| < 0.5 -> 8, |y| < 0.25 -> 4, |z| < 0.75 -> 12
    assert occupancy[:, :, 7].sum() == 8 * 4 and occupancy[3, :, :].sum() == 0  # z is the last index


def test_inside_out_and_slightly_open_meshes_are_solid():
    vertices, faces = _sphere(0.6)
    full = voxelise_mesh(vertices, faces, 24)
    assert np.array_equal(voxelise_mesh(vertices, faces[:, ::-1], 24), full)  # wound inside out
    open_mesh = faces[np.argsort(vertices[faces].mean(1)[:, 2])[:-3]]  # three triangles at the top removed
    assert (voxelise_mesh(vertices, open_mesh, 24) != full).mean() < 0.002


def test_split_rule():
    assert [n for n in range(25) if voxels._in_split(n, "test")] == [0, 10, 20]
    assert [n for n in range(12) if voxels._in_split(n, "train")] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]
    assert all(voxels._in_split(n, "all") for n in range(12))


def _fake_objects(folder, count: int = 12, bad: int = 3):
    """`count` OBJ files in pybullet's layout (NNN/NNN.obj): boxes of growing height; object `bad` is empty."""
    import trimesh

    files = []
    for number in range(count):
        path = folder / f"{number:03d}" / f"{number:03d}.obj"
        path.parent.mkdir(parents=True)
        if number == bad:
            path.write_text("")
        else:
            trimesh.creation.box(extents=(1.0, 0.5 + 0.1 * number, 0.8)).export(path)
        files.append(path)
    return files


def test_cache_round_trip_split_and_skipped(tmp_path, monkeypatch):
    files = _fake_objects(tmp_path / "objects")
    monkeypatch.setattr(voxels, "object_files", lambda: files)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    quick = load_voxels("train", resolution=16, limit=4)  # no cache yet: only these are voxelised
    assert quick.names == ["001", "002", "004", "005"] and quick.skipped == {"003": quick.skipped["003"]}
    assert not (tmp_path / "cache").exists()
    test = load_voxels("test", resolution=16)
    assert test.names == ["000", "010"] and test.occupancy.shape == (2, 16, 16, 16)
    assert test.occupancy.dtype == torch.uint8 and test.skipped == {}
    cache = voxels.voxel_cache_file(16)
    assert cache.exists() and cache.parent == tmp_path / "cache" / "nfields"
    monkeypatch.setattr(voxels, "voxelise_mesh", lambda *a: pytest.fail("voxelised again instead of reading the cache"))
    train = load_voxels("train", resolution=16)
    assert train.names == [f"{n:03d}" for n in (1, 2, 4, 5, 6, 7, 8, 9, 11)]
    assert list(train.skipped) == ["003"] and "empty" in train.skipped["003"]
    assert torch.equal(train.occupancy[:4], quick.occupancy)  # the same grids through the packed cache
    # object 001 is a box of extents (1.0, 0.6, 0.8) in the file (y up): in the world (z up) x, y, z span
    # 1.0, 0.8, 0.6, scaled so the longest is EXTENT = 1.875 of the cube's 2
    spans = [np.ptp(np.nonzero(train.occupancy[0].numpy())[axis]) + 1 for axis in range(3)]
    assert spans[0] >= 14 and spans[0] > spans[1] > spans[2]
    assert len(load_voxels("all", resolution=16, limit=5)) == 5
    assert train.batch([0, 2]).dtype == torch.float32 and train.batch([0, 2]).shape == (2, 16, 16, 16)


def test_marching_cubes_of_a_voxelised_sphere(tmp_path):
    occupancy = voxelise_mesh(*_sphere(0.6), 48)
    vertices, faces = occupancy_to_mesh(torch.from_numpy(occupancy))
    assert vertices.dtype == np.float32 and faces.dtype == np.int64 and len(faces) > 1000
    radius = np.linalg.norm(vertices, axis=1)
    assert abs(radius.mean() - 0.6) < 0.02 and np.abs(radius - 0.6).max() < 2 / 48 * 1.5  # within 1.5 voxels
    corners = vertices[faces]  # outward normals: the face normal points away from the centre
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert ((normals * corners.mean(1)).sum(1) > 0).mean() > 0.99
    save_mesh(tmp_path / "sphere.ply", vertices, faces)
    back_v, back_f = read_ply(tmp_path / "sphere.ply")
    assert np.array_equal(back_v, vertices) and np.array_equal(back_f, faces)
    save_mesh(tmp_path / "sphere.obj", vertices, faces)
    assert (tmp_path / "sphere.obj").read_text().count("\nf ") == len(faces)
    # probabilities work too; a shape touching the border is closed by the padding
    full = np.ones((8, 8, 8), np.float32) * 0.9
    v, f = occupancy_to_mesh(full)
    assert len(f) > 0 and v.min() >= -1 - 1e-6 and v.max() <= 1 + 1e-6
    assert occupancy_to_mesh(np.zeros((8, 8, 8)))[1].shape == (0, 3)


def test_surface_points_count_and_range():
    ball = _ball(32, 0.5)
    points = surface_points(ball, 500, seed=3)
    assert points.shape == (500, 3) and points.dtype == np.float32
    assert np.abs(points).max() <= 1 and abs(np.linalg.norm(points, axis=1).mean() - 0.5) < 0.03
    assert np.array_equal(points, surface_points(ball, 500, seed=3))
    assert not np.array_equal(points, surface_points(ball, 500, seed=4))
    assert surface_points(torch.from_numpy(ball)).shape == (voxels.SURFACE_POINTS, 3)
    with pytest.raises(NfieldsError, match="no surface"):
        surface_points(np.zeros((8, 8, 8)), 10)


def test_voxel_grid_picture(tmp_path):
    path = tmp_path / "grid.png"
    save_voxel_grid([_ball(16, 0.6), _ball(16, 0.3), np.zeros((16, 16, 16))], path, "balls", ["a", "b", "c"],
                    columns=2, size=32)
    assert path.stat().st_size > 1000
    picture = voxels.render_voxels(_ball(16, 0.6), size=32)
    assert picture.shape == (32, 32, 3) and picture[0, 0].tolist() == [1, 1, 1] and picture[16, 16].max() < 1


def test_bad_input():
    for call, match in [(lambda: load_voxels("val"), "unknown split 'val'"),
                        (lambda: load_voxels(resolution=3), "resolution must be"),
                        (lambda: voxel_centres(2), "resolution must be"),
                        (lambda: load_voxels(limit=-1), "limit must be"),
                        (lambda: occupancy_to_mesh(np.zeros((4, 5, 4))), "must be \\(R, R, R\\)"),
                        (lambda: save_mesh("mesh.stl", np.zeros((0, 3)), np.zeros((0, 3))), ".ply or .obj"),
                        (lambda: surface_points(_ball(8, 0.5), 0), "must be positive")]:
        with pytest.raises(NfieldsError, match=match) as error:
            call()
        message = str(error.value)
        assert message.endswith(".") and message.count(". ") == 0  # one sentence


@pytest.mark.skipif(not HAVE_PYBULLET, reason="pybullet not installed")
def test_real_objects(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # never build the real cache in a test
    data = load_voxels(limit=3)
    assert data.names == ["001", "002", "003"] and data.occupancy.shape == (3, 64, 64, 64)
    fractions = data.occupancy.float().mean((1, 2, 3))
    assert ((fractions > 0.005) & (fractions < 0.5)).all()
    extent = [np.ptp(np.nonzero(grid.numpy())[axis]) + 1 for grid in data.occupancy for axis in range(3)]
    assert max(extent) >= 56  # the longest side spans 1.875 of 2: about 60 voxels


def test_a_carried_cache_is_read_without_pybullet(tmp_path, monkeypatch):
    """A GPU box without pybullet reads the arrays nfields made elsewhere (the one cache file at that size)."""
    import nfields.data.voxels as voxels
    from nfields.errors import NfieldsError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = voxels.VoxelCache(np.packbits(np.ones((3, 4 ** 3), np.uint8), axis=1), ["000", "001", "002"],
                              np.arange(3), {}, 4)
    (tmp_path / "nfields").mkdir()
    voxels._write_cache(tmp_path / "nfields" / "voxels-4-1000-abc-v1.npz", cache)

    def missing():
        raise NfieldsError("pybullet's object set (pybullet_data/random_urdfs) is not installed; pip install pybullet.")

    monkeypatch.setattr(voxels, "object_files", missing)
    train = voxels.load_voxels("train", resolution=4)
    assert train.names == ["001", "002"] and train.occupancy.shape == (2, 4, 4, 4) and int(train.occupancy.min()) == 1
    with pytest.raises(NfieldsError, match="pybullet"):
        voxels.load_voxels("train", resolution=8)  # no cache at that size: the install hint stands
