"""nfields.data.object_views: many objects' pooled views, Plücker rays and few-shot batches."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

pytest.importorskip("mitsuba")
pytest.importorskip("trimesh")

from nfields.data import catalog  # noqa: E402
from nfields.data.make_scene import make_object_scenes  # noqa: E402
from nfields.data.object_views import load_object_views, split_objects  # noqa: E402
from nfields.errors import NfieldsError  # noqa: E402
from nfields.render.rays import camera_rays, plucker  # noqa: E402

if catalog.ENTRIES["duck"].path() is None:
    pytest.skip("pybullet is not installed", allow_module_level=True)

VIEWS = 5  # 4 train + 1 test view, pooled


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("objects") / "set"
    make_object_scenes(3, out, views=4, size=16, test_views=1, val_views=0, samples=4, progress=False)
    return out


@pytest.fixture(scope="module")
def data(folder):
    return load_object_views(folder, "all")


def test_shapes_and_pooled_views(data):
    assert len(data) == 3 and data.views == VIEWS and data.height == data.width == 16
    assert data.images.shape == (3, VIEWS, 16, 16, 3) and data.images.dtype == torch.uint8
    assert data.poses.shape == (3, VIEWS, 4, 4) and data.poses.dtype == torch.float32
    assert data.names == ["000", "001", "002"] and data.split == "all" and data.name == "set"
    assert data.images.float().mean() > 128  # white background
    assert data.to("cpu").images.shape == data.images.shape


def test_split_rule_limit_and_size(folder, data):
    assert split_objects([f"{i:03d}" for i in range(25)], "test") == ["000", "010", "020"]
    assert len(split_objects([f"{i:03d}" for i in range(25)], "train")) == 22
    assert load_object_views(folder, "test").names == ["000"]
    train = load_object_views(folder, "train")
    assert train.names == ["001", "002"] and train.split == "train"
    assert torch.equal(train.images, data.images[1:])
    assert load_object_views(folder, "train", limit=1).names == ["001"]
    small = load_object_views(folder, "all", size=8)
    assert small.images.shape == (3, VIEWS, 8, 8, 3)
    assert small.focal == pytest.approx(data.focal / 2)


def test_rays_are_plucker_of_camera_rays_and_origin_free(data):
    rays = data.rays(1, 3)
    origins, directions = camera_rays(data.poses[1, 3], 16, 16, data.focal)
    assert rays.shape == (16, 16, 6)
    assert torch.allclose(rays, plucker(origins, directions))
    moved = plucker(origins + 2.5 * directions, directions)
    assert torch.allclose(rays, moved, atol=1e-5)
    assert not torch.allclose(rays, plucker(origins + 0.5, directions), atol=1e-3)  # off the ray: differs
    batch = data.rays(torch.tensor([[0], [2]]), torch.tensor([[1, 4], [0, 2]]))
    assert batch.shape == (2, 2, 16, 16, 6) and torch.allclose(batch[1, 0], data.rays(2, 0))


def test_support_inputs_and_target_view(data):
    objects, support = torch.tensor([0, 2]), torch.tensor([[1, 3], [4, 0]])
    inputs = data.support_inputs(objects, support)
    assert inputs.shape == (2, 2, 16, 16, 9) and inputs.dtype == torch.float32
    assert torch.equal(inputs[1, 0, ..., :3], data.images[2, 4].float() / 255)
    assert torch.allclose(inputs[1, 0, ..., 3:], data.rays(2, 4))
    same, rays, rgb = data.target_view(objects, support, torch.tensor([2, 1]))
    assert torch.equal(same, inputs) and rays.shape == (2, 256, 6) and rgb.shape == (2, 256, 3)
    assert torch.allclose(rays[0], data.rays(0, 2).reshape(-1, 6))
    assert torch.equal(rgb[1], data.images[2, 1].reshape(-1, 3).float() / 255)


def test_sample_batch_queries_only_other_views(data):
    # images that say which view they are: view v is grey level 40 v everywhere
    labelled = replace(data, images=(torch.arange(VIEWS, dtype=torch.uint8) * 40)[None, :, None, None, None]
                       .expand(data.images.shape).contiguous())
    generator = torch.Generator().manual_seed(0)
    objects = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    for support in (1, 2, 3):
        inputs, rays, rgb, (support_views, query_views, pixels) = labelled.sample_batch(
            objects, support, 200, generator, return_indices=True)
        assert inputs.shape == (8, support, 16, 16, 9) and rays.shape == (8, 200, 6) and rgb.shape == (8, 200, 3)
        assert all(len(set(row.tolist())) == support for row in support_views)  # distinct supports
        view_of_query = (rgb[..., 0] * 255 / 40).round().long()  # read back from the colours
        assert torch.equal(view_of_query, query_views)
        assert not (view_of_query[:, :, None] == support_views[:, None, :]).any()
        view_of_support = (inputs[:, :, 0, 0, 0] * 255 / 40).round().long()
        assert torch.equal(view_of_support, support_views)
        # the query rays are those of their pixels
        b, n = 3, 17
        expected = data.rays(objects[b], query_views[b, n]).reshape(-1, 6)[pixels[b, n]]
        assert torch.allclose(rays[b, n], expected, atol=1e-6)
        assert len(set(query_views.flatten().tolist())) > 1 and pixels.max() < 256
    plain = data.sample_batch(objects, 2, 5, torch.Generator().manual_seed(1))
    again = data.sample_batch(objects, 2, 5, torch.Generator().manual_seed(1))
    assert len(plain) == 3 and all(torch.equal(a, b) for a, b in zip(plain, again))
    with pytest.raises(NfieldsError, match="support must be"):
        data.sample_batch(objects, VIEWS, 5)


def test_errors(folder, tmp_path):
    with pytest.raises(NfieldsError, match="does not exist.*make-scene --objects"):
        load_object_views(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NfieldsError, match="no objects.json"):
        load_object_views(tmp_path / "empty")
    with pytest.raises(NfieldsError, match="single scene"):
        load_object_views(folder / "000")
    with pytest.raises(NfieldsError, match="unknown split"):
        load_object_views(folder, "val")
    with pytest.raises(NfieldsError, match="limit"):
        load_object_views(folder, limit=0)
    one = tmp_path / "one"
    one.mkdir()
    (one / "objects.json").write_text(json.dumps({"objects": [{"name": "000"}]}))
    with pytest.raises(NfieldsError, match="no 'train' objects"):
        load_object_views(one, "train")
    uneven = tmp_path / "uneven"
    shutil.copytree(folder, uneven)
    transforms = uneven / "002" / "transforms_train.json"
    meta = json.loads(transforms.read_text())
    meta["frames"] = meta["frames"][:-1]
    transforms.write_text(json.dumps(meta))
    with pytest.raises(NfieldsError, match="same views and size"):
        load_object_views(uneven, "all")
