"""Stage 2, `nfields train diffusion`: the denoisers, classifier-free guidance, the EMA, a tiny prior that
samples near its training latents, end to end on tiny stage-1 runs (vectors and class-labelled tokens),
resuming, and every bad input of the issue."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from nfields.cli import main as cli_main
from nfields.cli import train_diffusion as cli_train_diffusion
from nfields.errors import NfieldsError
from nfields.generative.denoisers import Guided, ResidualMLPDenoiser, TransformerDenoiser, make_denoiser
from nfields.generative.prior import LatentPrior, latent_statistics
from nfields.jobs.train_diffusion import (DiffusionObjective, TrainDiffusionConfig, decode_latents,
                                          load_diffusion_run, make_optimizer, sample_latents)
from nfields.train import Trainer, TrainerConfig
from nfields.train.checkpoint import load_latest
from nfields.train.run import model_state

TINY_MLP = ["-o", "width=32", "-o", "groups=4", "-o", "blocks=2", "-o", "time_channels=16"]
FAST = ["--batch", "8", "--sampling-steps", "10", "--device", "cpu", "--quiet"]


def nfields(*argv: str) -> int:
    """The `nfields` command with `train diffusion` registered (cli/main.py gains it from the lead)."""
    parser = cli_main.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    jobs = train._subparsers._group_actions[0]
    if "diffusion" not in jobs.choices:
        cli_train_diffusion.add_parser(jobs)
    args = parser.parse_args([str(a) for a in argv])
    try:
        return args.handler(args)
    except NfieldsError as error:
        print(f"nfields: error: {error}", file=sys.stderr)
        return 2


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nfields: error: "), err
    return err[0]


def stage1(out: Path, latent_dim: int = 8, steps: int = 10) -> Path:
    """A tiny auto-decoder run on 16 emoji at 16x16: latent vectors from a learned table."""
    assert cli_main.main(["train", "ginr", "--dataset", "emoji", "--limit", "16", "--size", "16", "--method",
                          "autodecoder", "-o", f"latent_dim={latent_dim}", "-o", "hidden_width=16", "-o",
                          "hidden_layers=2", "--max-steps", str(steps), "--batch", "8", "--eval-limit", "2",
                          "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diffusion")
    s1 = stage1(root / "s1")
    prior = root / "prior"
    assert nfields("train", "diffusion", "--latents", s1, "--steps", "12", "--checkpoint-every", "6", *TINY_MLP,
                   *FAST, "--out", prior) == 0
    return {"root": root, "s1": s1, "prior": prior}


# -- the prior itself ---------------------------------------------------------------------------------------

def train_prior(prior: LatentPrior, latents: torch.Tensor, steps: int, lr: float, labels=None) -> DiffusionObjective:
    objective = DiffusionObjective(prior, latents, labels, None, None, TrainDiffusionConfig(source="-", eval_limit=0),
                                   batch=len(latents))
    Trainer(objective, make_optimizer(prior, lr, 0.0), None, TrainerConfig(steps, progress=False, log_every=100)).fit()
    return objective


def test_a_tiny_prior_samples_near_its_few_training_latents():
    torch.manual_seed(0)
    centres = torch.tensor([[2.0, 0, 1, -1], [-2.0, 0, 1, 1], [0, 2.0, -1, 0], [0, -2.0, 0, 2]])  # >= 3.6 apart
    latents = centres.repeat(16, 1)
    prior = LatentPrior(make_denoiser("mlp", (4,), 0, width=64, blocks=2, groups=4, time_channels=32),
                        *latent_statistics(latents), ema_decay=0.999)
    train_prior(prior, latents, steps=600, lr=2e-3)
    samples = prior.sample(256, 50, generator=torch.Generator().manual_seed(0))
    distance = torch.cdist(samples, centres)
    # Measured: max 0.22, mean 0.06 (noise alone, de-standardised, lands ~1.7 from the nearest centre).
    assert distance.min(1).values.max() < 0.5
    assert torch.bincount(distance.argmin(1), minlength=4).min() >= 32  # every mode, none dropped


def test_standardisation_is_per_dimension_for_vectors_and_per_token_channel_for_tokens():
    vectors = torch.randn(50, 3) * torch.tensor([1.0, 10.0, 0.1]) + 5
    mean, std = latent_statistics(vectors)
    assert mean.shape == std.shape == (3,)
    tokens = torch.randn(50, 4, 2) * torch.arange(1, 9.0).view(4, 2)
    mean, std = latent_statistics(tokens)
    assert mean.shape == std.shape == (4, 2)
    assert torch.allclose(std, tokens.std(0))
    with pytest.raises(NfieldsError, match="at least 2"):
        latent_statistics(tokens[:1])


def randomised(module: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised outputs and gates make a fresh adaLN-Zero denoiser predict 0: give it random weights."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


def test_transformer_denoiser_shapes_null_class_and_guidance():
    denoiser = randomised(make_denoiser("transformer", (5, 3), 4, width=16, depth=2, heads=2, time_channels=8))
    assert isinstance(denoiser, TransformerDenoiser) and denoiser.null_class == 4
    x, t, c = torch.randn(6, 5, 3), torch.randint(0, 1000, (6,)), torch.tensor([0, 1, 2, 3, 0, 1])
    out = denoiser(x, t, c)
    assert out.shape == (6, 5, 3)
    null = denoiser(x, t, torch.full((6,), 4))
    assert torch.allclose(denoiser(x, t, None), null)  # no condition = the null class
    assert not torch.allclose(out, null, atol=1e-4)
    for w in (0.0, 1.0, 3.0):
        expected = null + w * (out - null)
        assert torch.allclose(Guided(denoiser, w)(x, t, c), expected, atol=1e-5)
    prior = LatentPrior(denoiser, torch.zeros(5, 3), torch.ones(5, 3))
    classes = torch.tensor([2, 2, 3])
    plain = prior.sample(3, 5, classes, 1.0, torch.Generator().manual_seed(0), use_ema=False)
    guided = prior.sample(3, 5, classes, 3.0, torch.Generator().manual_seed(0), use_ema=False)
    assert plain.shape == (3, 5, 3) and (plain - guided).abs().max() > 1e-3
    with pytest.raises(NfieldsError, match="vectors"):
        make_denoiser("transformer", (7,), 0)
    with pytest.raises(NfieldsError, match="multiple"):
        make_denoiser("transformer", (5, 3), 0, width=10, heads=4)


def test_mlp_denoiser_conditional_and_unconditional():
    denoiser = make_denoiser("mlp", (6,), 3, width=16, blocks=4, groups=4, time_channels=8)
    assert isinstance(denoiser, ResidualMLPDenoiser)
    x, t = torch.randn(4, 6), torch.randint(0, 1000, (4,))
    assert denoiser(x, t, torch.tensor([0, 1, 2, 3])).shape == (4, 6)
    unconditional = make_denoiser("mlp", (6,), 0, width=16, blocks=2, groups=4)
    assert unconditional(x, t, None).shape == (4, 6)
    with pytest.raises(NfieldsError, match="unconditional"):
        unconditional(x, t, torch.zeros(4, dtype=torch.long))
    with pytest.raises(NfieldsError, match="even"):
        make_denoiser("mlp", (6,), 0, blocks=3)
    with pytest.raises(NfieldsError, match="tokens"):
        make_denoiser("mlp", (4, 6), 0)


def test_the_ema_trails_the_live_weights_and_is_what_sampling_uses():
    torch.manual_seed(0)
    latents = torch.randn(16, 4)
    prior = LatentPrior(make_denoiser("mlp", (4,), 0, width=16, blocks=2, groups=4, time_channels=8),
                        *latent_statistics(latents), ema_decay=0.9)
    before = [p.clone() for p in prior.ema.parameters()]
    train_prior(prior, latents, steps=30, lr=1e-2)
    assert int(prior.ema_updates) == 30
    live, ema = torch.nn.utils.parameters_to_vector(prior.denoiser.parameters()), \
        torch.nn.utils.parameters_to_vector(prior.ema.parameters())
    start = torch.nn.utils.parameters_to_vector(before)
    assert (live - ema).abs().max() > 1e-4 and (ema - start).abs().max() > 1e-4
    assert not any(p.requires_grad for p in prior.ema.parameters())
    sampled = prior.sample(8, 10, generator=torch.Generator().manual_seed(3))
    by_ema = prior.destandardize(prior.diffusion.sample(prior.ema, (8, 4), 10, generator=torch.Generator().manual_seed(3)))
    by_live = prior.sample(8, 10, generator=torch.Generator().manual_seed(3), use_ema=False)
    assert torch.equal(sampled, by_ema) and not torch.allclose(sampled, by_live)
    assert {"ema_updates", "mean", "std"} <= set(prior.state_dict()) and any(k.startswith("ema.") for k in prior.state_dict())


# -- end to end ------------------------------------------------------------------------------------------------

def test_end_to_end_train_sample_and_decode_at_any_scale(runs):
    prior_dir, s1 = runs["prior"], runs["s1"]
    metrics = json.loads((prior_dir / "metrics.json").read_text())
    assert metrics["denoiser"] == "mlp" and metrics["latent_shape"] == [8] and metrics["steps"] == 12
    assert metrics["train_latents"] == 16 and not metrics["class_conditional"] and "loss_test" not in metrics
    for picture in ("samples.png", "curve.png"):
        assert (prior_dir / picture).stat().st_size > 1000
    config = json.loads((prior_dir / "config.json").read_text())
    assert config["source"] == config["diffusion"]["latents"] == str(s1.resolve())
    assert config["kind"] == "train-diffusion" and config["format"] == 1
    assert config["field"] == "auto" and config["field_spec"]["denoiser"] == "mlp"
    assert config["diffusion"]["standardisation"] == "per dimension"

    run = load_diffusion_run(prior_dir, "cpu")
    latents = sample_latents(run, 5, seed=7)
    assert latents.shape == (5, 8) and torch.isfinite(latents).all()
    assert torch.equal(latents, sample_latents(run, 5, seed=7))
    assert not torch.equal(latents, sample_latents(run, 5, seed=8))
    # The stored statistics are those of the stage-1 table the prior was trained on.
    table = run.stage1.model.latents.detach()
    assert torch.allclose(run.prior.mean, table.mean(0)) and torch.allclose(run.prior.std, table.std(0))
    images = decode_latents(run, latents, scale=2.0)
    assert images.shape == (5, 32, 32, 3) and images.min() >= 0 and images.max() <= 1
    assert decode_latents(run, latents[:2], scale=0.5).shape == (2, 8, 8, 3)


def test_resume_continues_exactly(runs, tmp_path):
    """6 + 6 steps (the fixture's checkpoint at 6, resumed) give the same EMA and live weights as 12."""
    partial = tmp_path / "partial"
    shutil.copytree(runs["prior"], partial)
    for path in partial.glob("checkpoint-00000012.*"):
        path.unlink()
    assert nfields("train", "diffusion", "--resume", "--out", partial, "--quiet") == 0
    resumed, full = (model_state(load_latest(d)[0]) for d in (partial, runs["prior"]))
    assert resumed.keys() == full.keys()
    for key in full:
        assert torch.allclose(resumed[key].float(), full[key].float(), atol=1e-6), key


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="needs dataset-fashion-mnist")
def test_tokens_of_a_labelled_dataset_get_a_class_conditional_transformer(tmp_path):
    s1 = tmp_path / "tokens"
    assert cli_main.main(["train", "ginr", "--method", "locality", "--dataset", "fashion-mnist", "--limit", "24",
                          "--size", "8", "--eval-limit", "8", "--batch", "8", "--max-steps", "2", "-o", "width=16",
                          "-o", "depth=1", "-o", "heads=2", "-o", "tokens=4", "-o", "hidden_width=16",
                          "-o", "fourier_features=16", "--device", "cpu", "--quiet", "--out", str(s1)]) == 0
    out = tmp_path / "prior"
    assert nfields("train", "diffusion", "--latents", s1, "--steps", "20", "--lr", "1e-2", "-o", "width=16", "-o", "depth=1",
                   "-o", "heads=2", "-o", "time_channels=8", *FAST, "--eval-limit", "8", "--out", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["denoiser"] == "transformer" and metrics["latent_shape"] == [4, 16]
    assert metrics["train_latents"] == 24  # the stage-1 run's --limit
    assert metrics["class_conditional"] and metrics["num_classes"] == 10 and metrics["guidance"] == 2.5
    assert metrics["loss_test"] > 0 and metrics["loss_train"] > 0  # held out: the test split, encoded
    config = json.loads((out / "config.json").read_text())
    assert config["diffusion"]["standardisation"] == "per token and channel"
    run = load_diffusion_run(out, "cpu")
    assert run.prior.mean.shape == (4, 16)
    guided = sample_latents(run, 3, seed=1, classes=[0, 5, 9], guidance=4.0)
    assert guided.shape == (3, 4, 16)
    # 20 steps at 1e-2 so the class path has learned (its adaLN-Zero gates start at zero): guidance moves samples.
    assert (guided - sample_latents(run, 3, seed=1, classes=[0, 5, 9], guidance=1.0)).abs().max() > 1e-2
    assert decode_latents(run, guided, scale=3.0).shape == (3, 24, 24, 1)
    with pytest.raises(NfieldsError, match="0..9"):
        sample_latents(run, 2, classes=[3, 10])


# -- bad input -------------------------------------------------------------------------------------------------

def test_a_missing_stage1_run(tmp_path, capsys):
    assert nfields("train", "diffusion", "--latents", tmp_path / "nowhere", *FAST, "--out", tmp_path / "p") == 2
    assert "does not exist" in error_line(capsys)
    assert not (tmp_path / "p").exists()


def test_a_folder_that_is_not_a_stage1_run(runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", runs["prior"]):  # a diffusion run is no stage-1 run either
        assert nfields("train", "diffusion", "--latents", folder, *FAST, "--out", tmp_path / "p") == 2
        assert "is not a stage-1 run" in error_line(capsys)


def test_resume_with_latents_of_another_or_a_changed_run(runs, tmp_path, capsys):
    other = stage1(tmp_path / "other", latent_dim=16, steps=1)
    assert nfields("train", "diffusion", "--resume", "--latents", other, "--out", runs["prior"], "--quiet") == 2
    assert "was trained on the latents of" in error_line(capsys)
    # The stage-1 folder now holds a different run (latent vectors of 16, not 8).
    s1 = tmp_path / "s1"
    shutil.copytree(runs["s1"], s1)
    prior = tmp_path / "prior"
    assert nfields("train", "diffusion", "--latents", s1, "--steps", "2", *TINY_MLP, *FAST, "--out", prior) == 0
    shutil.rmtree(s1)
    shutil.copytree(other, s1)
    assert nfields("train", "diffusion", "--resume", "--steps", "4", "--out", prior, "--quiet") == 2
    assert "has changed since" in error_line(capsys)
    with pytest.raises(NfieldsError, match="has changed since"):
        load_diffusion_run(prior, "cpu")


def test_zero_samples_and_guidance_or_classes_without_class_conditioning(runs, tmp_path, capsys):
    run = load_diffusion_run(runs["prior"], "cpu")
    with pytest.raises(NfieldsError, match="at least 1"):
        sample_latents(run, 0)
    with pytest.raises(NfieldsError, match="class-conditional"):
        sample_latents(run, 2, guidance=2.0)
    with pytest.raises(NfieldsError, match="class-conditional"):
        sample_latents(run, 2, classes=[0, 1])
    assert nfields("train", "diffusion", "--latents", runs["s1"], "--guidance", "2", *FAST, "--out", tmp_path / "g") == 2
    assert "--guidance needs a class-conditional prior" in error_line(capsys)
    assert nfields("train", "diffusion", "--latents", runs["s1"], "--class-conditional", "on", *FAST,
                   "--out", tmp_path / "c") == 2
    assert "needs labels" in error_line(capsys)
    assert nfields("train", "diffusion", "--latents", runs["s1"], "--batch", "64", "--device", "cpu", "--quiet",
                   "--out", tmp_path / "b") == 2
    assert "fewer than one --batch" in error_line(capsys)
    assert nfields("train", "diffusion", "--latents", runs["s1"], "--sampling-steps", "2000", "--quiet",
                   "--out", tmp_path / "s") == 2
    assert "--sampling-steps" in error_line(capsys)
    assert nfields("train", "diffusion", "--resume", "--out", runs["s1"], "--quiet") == 2
    assert "is not a 'nfields train diffusion' run" in error_line(capsys)
    for folder in ("g", "c", "b", "s"):
        assert not (tmp_path / folder).exists()


def test_limit_trains_on_the_first_latents_only(runs, tmp_path):
    out = tmp_path / "limited"
    assert nfields("train", "diffusion", "--latents", runs["s1"], "--steps", "2", "--limit", "8", *TINY_MLP, *FAST,
                   "--out", out) == 0
    assert json.loads((out / "metrics.json").read_text())["train_latents"] == 8
