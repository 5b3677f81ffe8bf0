"""mNIF on radiance fields (nfields.generative.radiance, nfields.jobs.radiance_objective): shapes, the
latent table's gradients, whole views at any size, and a two-object overfit. Data: analytic spheres seen
from random cameras (exact, no renderer), and one tiny make-scene set when mitsuba is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nfields.data.cameras import focal_length, random_poses
from nfields.data.object_views import ObjectViews
from nfields.errors import NfieldsError
from nfields.generative.radiance import (MixtureRadianceField, RadianceBounds, RadianceMNIFConfig,
                                         radiance_config, radiance_field_from_spec, radiance_model_from_options)
from nfields.jobs.radiance_objective import (RadianceFieldObjective, object_rays, scene_bounds,
                                             training_view_count, write_radiance_outputs)
from nfields.train.trainer import Trainer, TrainerConfig
from nfields.jobs.train_ginr import InstanceData, TrainGINRConfig
from nfields.render.rays import camera_rays

TINY = dict(experts=4, width=16, hidden_layers=2, latent_dim=16, samples=16, fit_steps=10, fit_rays=128)


def spheres(specs, views: int, size: int, seed: int = 0) -> ObjectViews:
    """One object per (radius, colour): a flat-coloured sphere at the origin on white, `views` random cameras."""
    rng = np.random.default_rng(seed)
    focal = focal_length(size)
    images, poses = [], []
    for radius, color in specs:
        pose = torch.tensor(random_poses(views, rng), dtype=torch.float32)
        o, d = camera_rays(pose, size, size, focal)
        b = (o * d).sum(-1)
        hit = (b * b - ((o * o).sum(-1) - radius**2) > 0)[..., None]
        image = torch.where(hit, torch.tensor(color), torch.ones(3))
        images.append((image * 255).round().to(torch.uint8))
        poses.append(pose)
    return ObjectViews(torch.stack(images), torch.stack(poses), focal, [f"{i:03d}" for i in range(len(specs))])


TWO = [(0.9, (0.9, 0.2, 0.1)), (0.6, (0.1, 0.3, 0.9))]


def make_objective(data: ObjectViews, test: ObjectViews | None = None, train_views: int = 5, rays: int = 256,
                   **options) -> RadianceFieldObjective:
    torch.manual_seed(0)
    model = MixtureRadianceField(RadianceMNIFConfig(**{**TINY, **options}), len(data))
    config = TrainGINRConfig(source="unused", batch=len(data), query_rays=rays, seed=0)
    return RadianceFieldObjective(model, InstanceData(views=data), InstanceData(views=test or data), config,
                                  train_views=train_views)


def test_shapes_density_range_and_spec():
    model = MixtureRadianceField(RadianceMNIFConfig(**TINY), objects=3, bounds=RadianceBounds(2.0, 6.0, 1.5))
    assert model.field.config.output_sine is False and model.latents.shape == (3, 16)
    assert torch.count_nonzero(model.latents) == 0  # the official table starts at zero
    latents = torch.randn(2, 16)
    sigma, rgb = model.query(torch.randn(2, 7, 3), latents)
    assert sigma.shape == (2, 7) and rgb.shape == (2, 7, 3)
    assert sigma.min() >= 0 and sigma.max() <= model.config.max_density * model.config.coord_scale
    origins = torch.randn(2, 5, 3) + torch.tensor([0.0, 0.0, 4.0])
    directions = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    out = model.render_rays(latents, origins, directions, samples=8)
    assert out.rgb.shape == (2, 5, 3) and out.depth.shape == (2, 5) and out.opacity.shape == (2, 5)
    assert ((out.opacity >= 0) & (out.opacity <= 1 + 1e-5)).all()
    # Deterministic without training jitter.
    assert torch.equal(out.rgb, model.render_rays(latents, origins, directions, samples=8).rgb)
    rebuilt = radiance_field_from_spec(model.spec())
    assert rebuilt.spec() == model.spec()
    groups = model.parameter_groups(1e-4)
    assert groups[1]["params"][0] is model.latents and groups[1]["lr"] == pytest.approx(1e-3)
    assert radiance_config("S").latent_dim == 128 and radiance_config("L", samples=8).samples == 8
    with pytest.raises(NfieldsError):
        radiance_config("XL")
    with pytest.raises(NfieldsError):
        RadianceMNIFConfig(samples=0)


def test_model_from_command_line_options():
    model = radiance_model_from_options({"size": "S", "adapt": "autodecode", "experts": "8", "width": "0",
                                         "samples": "12"}, objects=2, bounds=RadianceBounds(1.0, 3.0, 1.0))
    config = model.config
    assert (config.experts, config.width, config.latent_dim, config.samples) == (8, 64, 128, 12)
    assert model.bounds.far == 3.0 and model.latents.shape == (2, 128)
    assert radiance_model_from_options({"size": "L", "experts": 2}, 1).config.width == 128
    with pytest.raises(NfieldsError, match="auto-decoding"):
        radiance_model_from_options({"adapt": "cavia"}, 2)
    with pytest.raises(NfieldsError, match="inner_steps"):
        radiance_model_from_options({"inner_steps": "3"}, 2)
    with pytest.raises(NfieldsError, match="size"):
        radiance_model_from_options({"size": "M"}, 2)


def test_empty_space_renders_the_white_background():
    model = MixtureRadianceField(RadianceMNIFConfig(**TINY), objects=1)
    with torch.no_grad():  # zero density everywhere: the output layer's sigma row gives elu(-1e3) + 0.1 = 0
        model.field.weights[-1][:, :, 3] = 0.0
        model.field.biases[-1][:, 3] = -1e3
    origins = torch.tensor([[[0.0, 0.0, 4.0]]])
    out = model.render_rays(torch.zeros(1, 16), origins, torch.tensor([[[0.0, 0.0, -1.0]]]))
    assert torch.allclose(out.rgb, torch.ones(1, 1, 3)) and out.opacity.item() < 1e-6


def test_latent_table_gets_gradients_only_for_the_batch():
    data = spheres(TWO + [(0.7, (0.2, 0.8, 0.2))], views=4, size=8)
    objective = make_objective(data, train_views=3, rays=32)
    model = objective.model
    with torch.no_grad():
        model.latents.normal_(0, 0.1)  # nonzero, so the coefficient map also gets gradients
    index = torch.tensor([0, 2])
    origins, directions, colors = object_rays(data, index[:, None], torch.zeros(2, 32, dtype=torch.long),
                                              torch.arange(32).expand(2, 32))
    predicted, penalty = model(index, origins, directions)
    ((predicted - colors).pow(2).mean() + penalty).backward()
    grad = model.latents.grad
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0 and torch.count_nonzero(grad[1]) == 0
    assert model.field.coefficients.weight.grad.abs().sum() > 0
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in model.field.weights)


def test_render_view_orbit_and_predefined_views_any_size():
    model = MixtureRadianceField(RadianceMNIFConfig(**TINY), objects=2)
    pose = torch.tensor(random_poses(1, np.random.default_rng(0))[0], dtype=torch.float32)
    rgb, depth, opacity = model.render_view(model.latents[0], pose, 12, 10, focal_length(10), chunk=50)
    assert rgb.shape == (12, 10, 3) and depth.shape == opacity.shape == (12, 10)
    assert rgb.min() >= 0 and rgb.max() <= 1 and model.training  # render_view restores the mode
    frames = model.render_orbit(model.latents[1], 3, 6, 8, focal_length(8))
    assert frames.shape == (3, 6, 8, 3) and frames.dtype == np.float32
    renders = model.render_latents(torch.randn(2, 16), pose[None].expand(3, -1, -1), 5, 5, focal_length(5))
    assert renders.shape == (2, 3, 5, 5, 3)
    with pytest.raises(NfieldsError):
        model.render_orbit(model.latents[0], 0, 4, 4, 5.0)


def test_two_object_overfit_improves_psnr(tmp_path):
    data = spheres(TWO, views=6, size=16)
    objective = make_objective(data, train_views=5, rays=256)
    model = objective.model
    before = objective.evaluate()
    optimizer = torch.optim.Adam(model.parameter_groups(1e-3))
    for step in range(250):
        loss, _ = objective.loss(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = objective.evaluate()
    # Measured (CPU, 1 thread, 2-10 s): train views 6.8 -> 18.1 dB, held-out views 6.8 -> 13.5 dB, fitted test
    # objects 6.9 -> 13.1 dB; over 3 other seeds the gains were at least 9.9, 5.1 and 5.2 dB.
    assert after["psnr_train_views"] > before["psnr_train_views"] + 8.0
    assert after["psnr"] > before["psnr"] + 4.0
    assert after["psnr_test_objects"] > before["psnr_test_objects"] + 3.0
    assert not torch.allclose(model.latents[0], model.latents[1])  # the objects got their own latents
    objective.save_views_picture(tmp_path / "views.png")
    assert (tmp_path / "views.png").stat().st_size > 1000


def test_objective_checks_and_training_view_count(tmp_path):
    data = spheres(TWO, views=4, size=8)
    model = MixtureRadianceField(RadianceMNIFConfig(**TINY), objects=3)
    config = TrainGINRConfig(source="unused", batch=2, query_rays=8)
    with pytest.raises(NfieldsError, match="latent table"):
        RadianceFieldObjective(model, InstanceData(views=data), InstanceData(views=data), config)
    with pytest.raises(NfieldsError, match="object views"):
        RadianceFieldObjective(model, InstanceData(images=torch.zeros(3, 8, 8, 3)), InstanceData(), config)
    (tmp_path / "objects.json").write_text('{"views": 3, "objects": []}')
    assert training_view_count(tmp_path, 5) == 3
    assert training_view_count(tmp_path / "missing", 5) == 4  # all but the last
    objective = make_objective(data, train_views=3, rays=8)
    assert objective.held_out == [3] and objective.items_per_step == (2 * 8, "rays")
    loss, logs = objective.loss(0)
    assert loss.ndim == 0 and set(logs) == {"psnr", "latent_penalty"}


def test_make_scene_objects_end_to_end(tmp_path):
    pytest.importorskip("mitsuba")
    pytest.importorskip("trimesh")
    from nfields.data import catalog
    from nfields.data.make_scene import make_object_scenes
    from nfields.data.object_views import load_object_views

    if catalog.ENTRIES["duck"].path() is None:
        pytest.skip("pybullet is not installed")
    folder = tmp_path / "objects"
    make_object_scenes(3, folder, views=4, size=16, test_views=1, val_views=0, samples=4, progress=False)
    train, test = load_object_views(folder, "train"), load_object_views(folder, "test")
    model = MixtureRadianceField(RadianceMNIFConfig(**TINY), len(train))
    config = TrainGINRConfig(source=f"scenes:{folder}", batch=2, query_rays=64)
    objective = RadianceFieldObjective(model, InstanceData(views=train), InstanceData(views=test), config)
    assert objective.train_views == 4 and objective.held_out == [4]  # from objects.json: 4 train + 1 test view
    assert scene_bounds(folder) == RadianceBounds(2.0, 6.0, 1.5)  # make-scene's transforms
    optimizer = torch.optim.Adam(model.parameter_groups(1e-4))
    trainer = Trainer(objective, optimizer, None, TrainerConfig(steps=2, progress=False, log_every=1))
    trainer.fit()
    metrics = trainer.history.evals[-1]
    assert {"psnr", "psnr_train_views", "psnr_test_objects"} <= set(metrics)
    assert all(np.isfinite(metrics[k]) for k in ("psnr", "psnr_train_views", "psnr_test_objects"))
    out = tmp_path / "run"
    out.mkdir()
    written = write_radiance_outputs(out, objective, config, trainer, torch.device("cpu"), orbit_frames=2)
    assert written["steps"] == 2 and written["inference_params"] < written["params"]
    assert {p.name for p in out.iterdir()} == {"metrics.json", "views.png", "orbit.png", "curve.png"}
