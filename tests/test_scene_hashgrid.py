"""The 'hashgrid' scene field (instant-NGP): shapes and gradients, the occupancy grid, a tiny fit,
and a state_dict round trip. Small settings throughout, so everything runs in seconds on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from nfields.fields.radiance import ngp  # noqa: F401  (registers 'hashgrid')
from nfields.fields.radiance.base import SCENE_FIELDS, SceneBounds, make_scene_field
from nfields.fields.radiance.ngp import HashGridSceneField, spherical_harmonics

SMALL = dict(levels=4, log2_table_size=12, base_resolution=4, max_resolution=32, width=32,
             grid_resolution=32, march_steps=128, grid_warmup=64)
BOUNDS = SceneBounds(near=2.0, far=6.0, bound=1.5)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny workloads of many small ops: a second OpenMP thread only waits, up to 50x slower on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_field(**options) -> HashGridSceneField:
    return make_scene_field("hashgrid", BOUNDS, **{**SMALL, **options})


def rays_towards(targets: torch.Tensor, distance: float = 4.0, seed: int = 0):
    """Rays from random points at `distance` from the centre through the given targets (R, 3)."""
    generator = torch.Generator().manual_seed(seed)
    origins = torch.randn(targets.shape[0], 3, generator=generator)
    origins = origins / origins.norm(dim=-1, keepdim=True) * distance
    directions = targets - origins
    return origins, directions / directions.norm(dim=-1, keepdim=True)


class SphereField(HashGridSceneField):
    """Density forced to exp(3) inside a sphere of radius 0.5 and exp(-30) ~ 0 outside."""

    radius = 0.5

    def geometry(self, points):
        out = super().geometry(points)
        inside = points.norm(dim=-1) < self.radius
        log_density = torch.where(inside, torch.full_like(out[:, 0], 3.0), torch.full_like(out[:, 0], -30.0))
        return torch.cat([log_density[:, None] + 0.0 * out[:, :1], out[:, 1:]], -1)


def test_registered_with_instant_ngp_defaults():
    cls, config_cls = SCENE_FIELDS.lookup("hashgrid")
    assert cls is HashGridSceneField
    field = make_scene_field("hashgrid", BOUNDS, log2_table_size=10, grid_resolution=8)  # small table, same rules
    assert cls.default_lr == 1e-2
    assert field.encoding.levels == 16 and field.encoding.features_per_level == 2
    # N_max = 2048 * bound (floor of N_min * b^15 may lose a hair to rounding)
    assert abs(float(field.encoding.resolutions[-1]) - 2048 * 1.5) <= 1
    assert math.isclose(field.step_size, 2 * math.sqrt(3) * 1.5 / 1024)
    assert all(getattr(m, "bias", None) is None for m in field.modules() if isinstance(m, torch.nn.Linear))
    assert config_cls().grid_resolution == 128 and config_cls().log2_table_size == 19


def test_spherical_harmonics_are_orthonormal():
    directions = torch.randn(200_000, 3, dtype=torch.float64)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    basis = spherical_harmonics(directions)
    gram = 4 * math.pi * basis.T @ basis / directions.shape[0]  # Monte Carlo over the sphere
    assert basis.shape == (200_000, 16)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.05)


def test_render_shapes_range_and_gradients():
    torch.manual_seed(0)
    field = small_field()
    origins, directions = rays_towards(torch.rand(64, 3) * 2 - 1)
    out = field.render_rays(origins, directions, torch.tensor([1.0, 1.0, 1.0]), training=True)
    assert out.rgb.shape == (64, 3) and out.depth.shape == (64,) and out.opacity.shape == (64,)
    assert out.rgb.min() >= 0 and out.rgb.max() <= 1 + 1e-6
    out.rgb.sum().backward()
    for name, parameter in field.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_packed_samples_are_sorted_inside_the_box_and_cover_it():
    field = small_field()
    origins, directions = rays_towards(torch.zeros(16, 3))
    samples = field.sample_rays(origins, directions, training=True)
    assert (samples.ray_index[1:] >= samples.ray_index[:-1]).all()
    same_ray = samples.ray_index[1:] == samples.ray_index[:-1]
    assert (samples.t[1:][same_ray] > samples.t[:-1][same_ray]).all()
    points = origins[samples.ray_index] + directions[samples.ray_index] * samples.t[:, None]
    assert points.abs().max() <= 1.5 + 1e-5
    # Through the centre every ray crosses the whole box: about 2 * 1.5 / dt steps (the grid is all occupied).
    per_ray = torch.bincount(samples.ray_index, minlength=16)
    assert (per_ray >= math.floor(3.0 / field.step_size) - 1).all()


def test_occupancy_grid_empties_space_outside_an_analytic_sphere():
    torch.manual_seed(0)
    field = SphereField(SCENE_FIELDS.config("hashgrid", SMALL), BOUNDS)
    grid = field.grid
    assert grid.occupied.all()  # warm-up: everything occupied before the first refresh
    field.before_step(0)  # step 0 < grid_warmup: every cell
    g = grid.resolution
    index = torch.arange(g ** 3)
    centres = ((torch.stack([index // (g * g), (index // g) % g, index % g], -1) + 0.5) / g * 2 - 1) * 1.5
    half_diagonal = math.sqrt(3) * 1.5 / g
    distance = centres.norm(dim=-1)
    assert not grid.occupied[distance > 0.5 + half_diagonal].any()
    assert grid.occupied[distance < 0.5 - half_diagonal].all()
    field.before_step(5)  # not a refresh step: nothing changes
    before = grid.density.clone()
    field.before_step(16)
    assert not torch.equal(before, grid.density)
    # Rays that pass 1.0 from the centre miss the sphere and every occupied cell: no samples, background only.
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [0.7, 0.7, 0.1]])
    targets = targets / targets.norm(dim=-1, keepdim=True)
    # Each ray passes its target at right angles to the line from the centre.
    tangent = torch.linalg.cross(targets, torch.tensor([0.3, 0.5, 0.8]).expand_as(targets), dim=-1)
    tangent = tangent / tangent.norm(dim=-1, keepdim=True)
    origins = targets - 4.0 * tangent
    assert len(field.sample_rays(origins, tangent, training=True)) == 0
    background = torch.tensor([0.2, 0.4, 0.6])
    out = field.render_rays(origins, tangent, background, training=True)
    assert torch.allclose(out.rgb, background.expand(4, 3)) and (out.opacity == 0).all()
    out.rgb.sum().backward()  # zero samples still back-propagate (all-zero gradients)
    # Rays through the centre hit it and turn opaque.
    origins, directions = rays_towards(torch.zeros(4, 3))
    hit = field.render_rays(origins, directions, background, training=False)
    assert (hit.opacity > 0.99).all()
    assert torch.allclose(hit.depth, torch.full((4,), 3.5), atol=0.1)


def test_zero_samples_from_rays_that_miss_the_box():
    field = small_field()
    origins = torch.tensor([[0.0, 3.0, 4.0], [5.0, 5.0, 5.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    background = torch.tensor([0.0, 1.0, 0.0])
    out = field.render_rays(origins, directions, background, training=True)
    assert torch.equal(out.rgb, background.expand(2, 3))
    out.rgb.sum().backward()


def test_thinning_caps_training_samples():
    field = small_field(max_samples=500, early_stop=0.0)
    origins, directions = rays_towards(torch.zeros(16, 3))
    full = field.sample_rays(origins, directions, training=True)
    assert len(full) > 1000
    thinned = field._thin(full)
    assert 0 < len(thinned) <= 500
    stride = float(thinned.deltas[0] / field.step_size)
    assert stride >= len(full) / 500 - 1e-4 and torch.allclose(thinned.deltas, thinned.deltas[0].expand(len(thinned)))
    # The coarser march still spans each ray: the intervals add up to about the same length.
    assert math.isclose(float(thinned.deltas.sum()), float(full.deltas.sum()), rel_tol=0.1)
    out = field.render_rays(origins, directions, torch.ones(3), training=True)
    assert out.rgb.shape == (16, 3)


def test_density_is_zero_outside_the_box():
    field = small_field()
    points = torch.tensor([[0.0, 0.0, 0.0], [1.4, -1.4, 0.3], [1.6, 0.0, 0.0], [0.0, 0.0, -3.0]])
    sigma = field.density(points)
    assert sigma.shape == (4,)
    assert (sigma[:2] > 0).all() and (sigma[2:] == 0).all()


def test_optimizer_settings():
    field = small_field()
    optimizer = field.make_optimizer(1e-2)
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    assert groups[id(field.encoding.table)]["weight_decay"] == 0.0
    assert groups[id(field.density_net[0].weight)]["weight_decay"] == 1e-6
    assert optimizer.defaults["betas"] == (0.9, 0.99) and optimizer.defaults["eps"] == 1e-15
    assert len(groups) == len(list(field.parameters()))


def test_tiny_fit_to_a_constant_colour():
    torch.manual_seed(0)
    field = small_field(grid_resolution=16, march_steps=64)
    origins, directions = rays_towards(torch.rand(16, 3) - 0.5, seed=1)
    target = torch.tensor([0.9, 0.2, 0.1])
    background = torch.tensor([0.0, 0.0, 0.0])
    optimizer = field.make_optimizer(field.default_lr)
    losses = []
    for step in range(100):
        field.before_step(step)
        out = field.render_rays(origins, directions, background, training=True)
        loss = ((out.rgb - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.02 * losses[0], losses[::10]


def test_state_dict_round_trip_keeps_the_occupancy_grid():
    torch.manual_seed(0)
    field = SphereField(SCENE_FIELDS.config("hashgrid", SMALL), BOUNDS)
    field.before_step(0)
    state = field.state_dict()
    assert "grid.density" in state and "grid.occupied" in state and state["grid.occupied"].dtype == torch.bool
    fresh = SphereField(SCENE_FIELDS.config("hashgrid", SMALL), BOUNDS)
    assert fresh.grid.occupied.all()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.grid.occupied, field.grid.occupied)
    field.eval(), fresh.eval()
    origins, directions = rays_towards(torch.rand(32, 3) - 0.5, seed=2)
    with torch.no_grad():
        a = field.render_rays(origins, directions, torch.ones(3), training=False)
        b = fresh.render_rays(origins, directions, torch.ones(3), training=False)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)


def test_eval_chunks_match_one_pass(monkeypatch):
    torch.manual_seed(0)
    field = small_field(early_stop=0.0)
    origins, directions = rays_towards(torch.rand(16, 3) - 0.5, seed=3)
    with torch.no_grad():
        whole = field.render_rays(origins, directions, torch.ones(3), training=False)
        monkeypatch.setattr(ngp, "EVAL_CHUNK", 97)
        monkeypatch.setattr(ngp, "CANDIDATE_CHUNK", 300)
        chunked = field.render_rays(origins, directions, torch.ones(3), training=False)
    assert torch.allclose(whole.rgb, chunked.rgb, atol=1e-6)
