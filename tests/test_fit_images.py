"""`nfields fit images`: one field per image, K at a time, with per-slot Adam, refills and resume."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import nfields
from nfields.data.catalog import ENTRIES
from nfields.data.datasets import ImageDataset
from nfields.fields import FIELDS, Field
from nfields.jobs.fit_images import FitImagesConfig, run_fit_images
from nfields.jobs.image_slots import ImageSlotsObjective
from nfields.train.slot_adam import SlotAdam

from conftest import make_image, to_uint8

SMALL = {"width": 16, "hidden_layers": 1}  # a tiny SIREN: the tests are about bookkeeping, not quality
FAST = dict(field_options=SMALL, lr=1e-3, device="cpu", progress=False)


def tiny_dataset(count: int = 5, size: int = 8) -> ImageDataset:
    """`count` different gray images: the test image, flipped, rolled and inverted."""
    base = make_image(size, size, 1)
    images = [np.roll(base if i % 2 == 0 else 1 - base, i, axis=i % 2) for i in range(count)]
    stack = torch.from_numpy(np.stack([to_uint8(a)[..., None] for a in images]))
    return ImageDataset(stack, None, [f"im{i}" for i in range(count)], "tiny", "all")


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(tiny_dataset(5, 12).images.numpy()):
        Image.fromarray(image[..., 0]).save(folder / f"{i:02d}.png")
    return folder


# -- SlotAdam ------------------------------------------------------------------------------------------

def test_slot_adam_equals_separate_adams_and_reset_starts_a_slot_over():
    torch.manual_seed(0)
    slots, shape = 3, (4, 5)
    start = torch.randn(slots, *shape)
    stacked = torch.nn.Parameter(start.clone())
    singles = [torch.nn.Parameter(start[k].clone()) for k in range(slots)]
    ours = SlotAdam([stacked], lr=0.01, betas=(0.9, 0.99), eps=1e-15)
    theirs = [torch.optim.Adam([p], lr=0.01, betas=(0.9, 0.99), eps=1e-15) for p in singles]
    for step in range(12):
        if step == 5:  # slot 1 starts over: a fresh parameter value and a fresh Adam
            with torch.no_grad():
                stacked[1] = singles[1] = torch.nn.Parameter(torch.randn(*shape))
            theirs[1] = torch.optim.Adam([singles[1]], lr=0.01, betas=(0.9, 0.99), eps=1e-15)
            ours.reset(torch.tensor([1]))
        grads = torch.randn(slots, *shape)
        stacked.grad = grads.clone()
        ours.step()
        for k in range(slots):
            singles[k].grad = grads[k].clone()
            theirs[k].step()
    for k in range(slots):
        torch.testing.assert_close(stacked[k].detach(), singles[k].detach(), rtol=1e-6, atol=1e-7)
    assert ours.state[stacked]["slot_step"].tolist() == [12, 7, 12]


# -- fitting ----------------------------------------------------------------------------------------------

def test_batched_fit_equals_fitting_each_image_alone():
    data = tiny_dataset(3)
    fitted, trainer = nfields.fit_images(data, batch=2, steps=15, seed=7, **FAST)
    assert len(fitted) == 3 and fitted.steps.tolist() == [15, 15, 15]
    for i in range(3):
        torch.manual_seed(7 + i)  # image i's own initialisation
        field = nfields.make_field("siren", 2, 1, **SMALL)
        signal = nfields.ImageSignal(data.batch([i])[0].numpy(), f"im{i}")
        alone, _ = nfields.fit_image(signal, field, steps=15, lr=1e-3, device="cpu", progress=False)
        for name, value in alone.field.state_dict().items():
            torch.testing.assert_close(fitted.weights[name][i], value, rtol=0, atol=1e-5)
        assert abs(float(fitted.psnr[i]) - alone.metrics["psnr"]) < 1e-3


@pytest.mark.parametrize("target", [None, 16.0])
def test_results_do_not_depend_on_the_batch_size(target):
    data = tiny_dataset(5)
    one, _ = nfields.fit_images(data, batch=5, steps=30, target_psnr=target, check_every=5, **FAST)
    other, _ = nfields.fit_images(data, batch=2, steps=30, target_psnr=target, check_every=5, **FAST)
    assert one.steps.tolist() == other.steps.tolist()
    if target is not None:
        assert 0 < (one.steps < 30).sum() < 5  # some stopped early, some ran their budget
    for name in one.weights:
        torch.testing.assert_close(one.weights[name], other.weights[name], rtol=0, atol=1e-6)


def test_target_psnr_stops_images_early_at_checks():
    data = tiny_dataset(4)
    fitted, trainer = nfields.fit_images(data, batch=2, steps=200, target_psnr=20.0, check_every=5, **FAST)
    steps, psnr = fitted.steps, fitted.psnr
    early = steps < 200
    assert early.any(), steps
    assert (psnr[early] >= 20.0).all() and (steps[early] % 5 == 0).all()
    assert (psnr[~early] < 20.0).all()  # an image that never got there ran its whole budget
    assert trainer.step < 2 * 200 + 1  # ended when the last image finished, not at the upper bound


def test_slots_are_refilled_in_order_until_every_image_is_done():
    data = tiny_dataset(7)
    config = FitImagesConfig(batch=3, steps=4, **{k: v for k, v in FAST.items() if k != "progress"})
    objective = ImageSlotsObjective(data.images, config, torch.device("cpu"))
    seen = [objective.model.slot_image.tolist()]
    step = 0
    while not objective.finished():
        loss, _ = objective.loss(step)
        objective.optimizer.zero_grad()
        loss.backward()
        objective.optimizer.step()
        objective.after_step()
        step += 1
        if objective.model.slot_image.tolist() != seen[-1]:
            seen.append(objective.model.slot_image.tolist())
    # Each slot trains its image 4 steps, then takes the next one in order; slots empty when none are left.
    assert seen == [[0, 1, 2], [3, 4, 5], [6, -1, -1], [-1, -1, -1]]
    assert step == 3 * 4 + 1  # the last check empties every slot, then one (idle) step ends the run
    assert objective.model.steps.tolist() == [4] * 7 and objective.model.done.all()


def test_fitted_fields_render_their_images_at_their_psnr(tmp_path, image_folder):
    config = FitImagesConfig(source=str(image_folder), batch=2, steps=30, field_options=SMALL, lr=1e-3,
                             device="cpu", checkpoint_every=1000)
    metrics = run_fit_images(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    tensors = load_file(str(run / "fields.safetensors"))
    assert tensors["psnr"].shape == (5,) and tensors["steps"].tolist() == [30] * 5
    assert tensors["net.0.linear.weight"].shape == (5, 16, 2)
    fitted = nfields.load_fitted_images(run)
    assert len(fitted) == 5
    data = nfields.load_dataset(image_folder, "all")
    for i in (0, 4):
        assert isinstance(fitted.field(i), Field)
        image = fitted.fitted(i).render()
        assert image.shape == (12, 12, 1)
        assert abs(nfields.psnr(torch.from_numpy(image), data.batch([i])[0]) - float(fitted.psnr[i])) < 1e-3
    assert metrics["images"] == 5 and abs(metrics["psnr_mean"] - float(fitted.psnr.mean())) < 1e-4
    rows = list(csv.DictReader((run / "psnr.csv").open()))
    assert [r["name"] for r in rows] == [f"{i:02d}.png" for i in range(5)]
    config_json = json.loads((run / "config.json").read_text())
    assert config_json["field_spec"]["name"] == "siren" and config_json["image"]["count"] == 5
    assert config_json["kind"] == "fit-images" and config_json["format"] == 1
    for name in ("metrics.json", "reconstructions.png", "psnr_histogram.png"):
        assert (run / name).stat().st_size > 0


def test_a_killed_run_resumes_to_the_same_result(tmp_path, image_folder, monkeypatch):
    config = FitImagesConfig(source=str(image_folder), batch=2, steps=12, target_psnr=18.0, check_every=4,
                             field_options=SMALL, lr=1e-3, device="cpu", checkpoint_every=7)
    run_fit_images(config, tmp_path / "whole", progress=False)

    after_step = ImageSlotsObjective.after_step

    def killed(self):
        after_step(self)
        if self._step == 17:  # after the checkpoint at step 14
            raise KeyboardInterrupt

    monkeypatch.setattr(ImageSlotsObjective, "after_step", killed)
    with pytest.raises(KeyboardInterrupt):
        run_fit_images(config, tmp_path / "killed", progress=False)
    monkeypatch.setattr(ImageSlotsObjective, "after_step", after_step)
    assert not (tmp_path / "killed" / "fields.safetensors").exists()
    run_fit_images(config, tmp_path / "killed", resume=True, progress=False)

    whole = load_file(str(tmp_path / "whole" / "fields.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "fields.safetensors"))
    assert whole.keys() == resumed.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=1e-6)


# -- the command line ---------------------------------------------------------------------------------------

CLI_FAST = ["--device", "cpu", "--quiet", "--width", "16", "--hidden-layers", "1", "--lr", "1e-3"]


def test_cli_end_to_end_on_a_folder(cli, image_folder, tmp_path):
    run = tmp_path / "run"
    result = cli("fit", "images", image_folder, "--batch", "2", "--steps", "20", "--target-psnr", "15",
                 "--out", run, *CLI_FAST)
    assert result.code == 0, result.err
    assert "5 images (12x12x1, siren, cpu): mean PSNR" in result.out and "reached 15 dB" in result.out
    assert str(run / "fields.safetensors") in result.out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == 5 and metrics["images_per_second"] > 0 and 0 <= metrics["reached_target"] <= 1
    # `nfields render` draws one image's field at any scale; the run's other fields need --index.
    result = cli("render", run, "--index", "2", "--scale", "3", "--out", tmp_path / "two.png", "--device", "cpu")
    assert result.code == 0, result.err
    assert np.asarray(Image.open(tmp_path / "two.png")).shape[:2] == (36, 36)
    for flags, match in ((["--scale", "3"], "give --index"), (["--index", "5", "--scale", "3"], "out of range")):
        result = cli("render", run, *flags, "--out", tmp_path / "bad.png", "--device", "cpu")
        assert result.code == 2 and match in result.err and not (tmp_path / "bad.png").exists()


@pytest.mark.skipif(ENTRIES["fashion-mnist"].path() is None, reason="Debian dataset-fashion-mnist not installed")
def test_cli_fashion_mnist(cli, tmp_path):
    result = cli("fit", "images", "fashion-mnist", "--split", "test", "--limit", "8", "--batch", "4",
                 "--steps", "10", "--out", tmp_path / "run", *CLI_FAST)
    assert result.code == 0, result.err
    assert "8 images (28x28x1" in result.out
    assert load_file(str(tmp_path / "run" / "fields.safetensors"))["psnr"].shape == (8,)


@dataclass
class UnbatchableConfig:
    width: int = 4


@pytest.fixture
def unbatchable_field():
    class Unbatchable(Field):
        """Reads a weight to the host in its forward, which vmap cannot batch."""

        def __init__(self, in_features, out_features, config):
            super().__init__(in_features, out_features, config)
            self.linear = torch.nn.Linear(in_features, out_features)

        def forward(self, coords, condition=None):
            return self.linear(coords) * float(self.linear.bias.sum())

    FIELDS.register("test-unbatchable", UnbatchableConfig)(Unbatchable)
    yield "test-unbatchable"
    del FIELDS._entries["test-unbatchable"]


@pytest.mark.parametrize("flags, match", [
    (["--batch", "0"], "--batch must be a positive number of images, not 0."),
    (["--limit", "0"], "--limit must be a positive number of images, not 0."),
    (["--target-psnr", "0"], "--target-psnr must be a positive PSNR in dB, not 0.0."),
    (["--target-psnr", "-3"], "--target-psnr must be a positive PSNR in dB"),
    (["--split", "val"], "unknown --split 'val'"),
    (["--kernel", "fused"], "--kernel fused is not available to batched fits"),
])
def test_bad_settings(cli, image_folder, tmp_path, flags, match):
    result = cli("fit", "images", image_folder, "--out", tmp_path / "run", *CLI_FAST, *flags)
    assert_user_error(result, tmp_path / "run", match)


@pytest.mark.parametrize("source, match", [
    ("no-such-dataset", "unknown dataset 'no-such-dataset'"),
    ("missing/folder", "folder 'missing/folder' does not exist"),
])
def test_bad_sources(cli, tmp_path, source, match):
    result = cli("fit", "images", source, "--out", tmp_path / "run", *CLI_FAST)
    assert_user_error(result, tmp_path / "run", match)


def test_a_field_vmap_cannot_batch(cli, image_folder, tmp_path, unbatchable_field):
    result = cli("fit", "images", image_folder, "--field", unbatchable_field, "--out", tmp_path / "run",
                 "--device", "cpu", "--quiet")
    assert_user_error(result, tmp_path / "run", "field 'test-unbatchable' cannot be batched with torch.func.vmap")


def assert_user_error(result, run: Path, match: str) -> None:
    assert result.code == 2, (result.out, result.err)
    assert result.err.startswith("nfields: error: ") and match in result.err, result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert not run.exists()
