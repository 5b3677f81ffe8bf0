"""Runs you can trust (issue 17): nothing lost (--overwrite, damaged checkpoints, failed starts and resumes,
leftovers of kills), one validated run manifest (config.json and --config), and time budgets kept (--seconds,
the CPU estimate, DDP ranks that stop together)."""

from __future__ import annotations

import datetime
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import nfields
from nfields.cli.main import build_parser
from nfields.jobs.image_objectives import ImageObjective
from nfields.train import Trainer, TrainerConfig
from nfields.train.checkpoint import checkpoints
from nfields.train.manifest import KINDS, legacy_kind, run_kind
from nfields.train.run import check_run_dir

from conftest import make_image, run_cli_quietly, to_uint8
from test_cli import assert_user_error

FIT = ["--size", "16", "--quiet", "--device", "cpu", "-o", "width=16"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def staging_leftovers(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if ".nfields-" in p.name]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished 16x16 SIREN run, 20 steps, checkpoints at 10 and 20 (copied by `run` for each test)."""
    root = tmp_path_factory.mktemp("safety")
    source = root / "test.png"
    Image.fromarray(to_uint8(make_image(48, 48, 3))).save(source)
    result = run_cli_quietly("fit", "image", source, "--out", root / "run", "--steps", "20", "--checkpoint-every",
                             "10", *FIT)
    assert result.code == 0, result.err
    return root / "run"


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    return out


def slow_loss(monkeypatch, seconds: float, fail_at: int | None = None, error=KeyboardInterrupt):
    """Make every image-fit step take `seconds` longer (and raise `error` at step `fail_at`)."""
    original = ImageObjective.loss

    def loss(self, step):
        if fail_at is not None and step >= fail_at:
            raise error()
        time.sleep(seconds)
        return original(self, step)

    monkeypatch.setattr(ImageObjective, "loss", loss)


# -- 1. nothing lost: --overwrite ---------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["cwd", "files", "foreign-config", "list-config"])
def test_overwrite_refuses_a_folder_that_holds_no_run(cli, image_png, tmp_path, content):
    if content == "cwd":
        out = Path(".")  # the working folder (tmp_path) holds test.png: `--out . --overwrite` once wiped it
        folder = tmp_path
    else:
        folder = out = tmp_path / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
        if content == "foreign-config":
            (out / "config.json").write_text('{"theme": "dark"}')
        elif content == "list-config":
            (out / "config.json").write_text("[1, 2]")
    before = snapshot(folder)
    assert_user_error(cli("fit", "image", image_png, "--out", out, "--overwrite", *FIT, "--steps", "5"),
                      match="holds no nfields run")
    assert snapshot(folder) == before


def test_failed_overwrite_leaves_the_old_run_as_it_was(run, cli, image_png):
    before = snapshot(run)
    result = cli("fit", "image", image_png, "--out", run, "--overwrite", "--field", "relu", "--lr", "inf",
                 "--log-every", "1", "--steps", "20", *FIT)
    assert_user_error(result)
    assert snapshot(run) == before
    assert staging_leftovers(run) == []


def test_interrupted_overwrite_leaves_the_old_run_as_it_was(run, cli, image_png, monkeypatch):
    before = snapshot(run)
    slow_loss(monkeypatch, 0.0, fail_at=3)
    result = cli("fit", "image", image_png, "--out", run, "--overwrite", "--steps", "20", *FIT)
    assert result.code == 130 and "Traceback" not in result.err
    assert snapshot(run) == before
    assert staging_leftovers(run) == []


def test_overwrite_swaps_the_new_run_in_at_its_first_checkpoint(run, cli, image_png, monkeypatch):
    seen = []
    save = Trainer.save

    def watched(self):
        save(self)
        seen.append((self.run_dir, json.loads((run / "config.json").read_text())["field"],
                     [p.name for p in checkpoints(run)]))

    monkeypatch.setattr(Trainer, "save", watched)
    result = cli("fit", "image", image_png, "--out", run, "--overwrite", "--field", "relu", "--steps", "20",
                 "--checkpoint-every", "10", *FIT)
    assert result.code == 0, result.err
    # At the first checkpoint the new run is already at --out, the old one gone.
    assert seen[0] == (run.absolute(), "relu", ["checkpoint-00000010.json"])
    assert json.loads((run / "metrics.json").read_text())["field"] == "relu"
    assert staging_leftovers(run) == []
    if (run / "events").exists():  # TensorBoard installed: its events were reopened at the new place
        assert any((run / "events").iterdir())


def test_a_killed_overwrite_is_tidied_at_the_next_start(run, cli):
    dead = run.parent / ".run.nfields-staging-999999999-1"  # what a SIGKILL before the first checkpoint leaves
    dead.mkdir()
    (dead / "config.json").write_text("{}")
    result = cli("fit", "image", "--resume", "--out", run, "--quiet")
    assert result.code == 0, result.err
    assert staging_leftovers(run) == []


@pytest.mark.parametrize("staged", [True, False])
def test_a_swap_cut_in_half_is_completed_or_undone(tmp_path, staged):
    """A kill between the two renames of a swap without renameat2: the next start puts a run back at --out."""
    out = tmp_path / "run"
    replaced = tmp_path / ".run.nfields-replaced-999999999-2"
    replaced.mkdir()
    (replaced / "config.json").write_text('{"old": true}')
    if staged:
        staging = tmp_path / ".run.nfields-staging-999999999-1"
        staging.mkdir()
        (staging / "config.json").write_text('{"new": true}')
    check_run_dir(out, resume=True, overwrite=False)
    assert json.loads((out / "config.json").read_text()) == ({"new": True} if staged else {"old": True})
    assert staging_leftovers(out) == []


# -- 1. nothing lost: damaged checkpoints, failed starts and resumes, leftovers ----------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def skip_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "skipped" in line]


def test_a_damaged_newest_checkpoint_is_skipped_out_loud(run, cli, tmp_path):
    truncate(run / "checkpoint-00000020.safetensors")
    rendered = cli("render", run, "--scale", "1", "--out", tmp_path / "x.png")
    assert rendered.code == 0, rendered.err
    [line] = skip_lines(rendered.err)
    assert "checkpoint-00000020" in line and ".safetensors file is damaged" in line and "checkpoint-00000010" in line
    exported = cli("export", run, "--bits", "16", "--out", tmp_path / "x.safetensors")
    assert exported.code == 0, exported.err
    assert len(skip_lines(exported.err)) == 1
    resumed = cli("fit", "image", "--resume", "--out", run, "--steps", "30", "--quiet")
    assert resumed.code == 0, resumed.err
    assert len(skip_lines(resumed.err)) == 1
    assert json.loads((run / "metrics.json").read_text())["steps"] == 30


def test_no_good_checkpoint_is_an_error_never_a_restart(run, cli, tmp_path):
    for meta in checkpoints(run):
        meta.write_text("{ not json")
    before = snapshot(run)
    assert_user_error(cli("fit", "image", "--resume", "--out", run, "--steps", "30", "--quiet"),
                      match="reads back whole")
    assert snapshot(run) == before
    assert_user_error(cli("render", run, "--scale", "1", "--out", tmp_path / "x.png"), tmp_path / "x.png",
                      match="reads back whole")


def test_a_run_killed_before_its_first_checkpoint_restarts_with_a_notice(run, cli):
    for path in [*run.glob("checkpoint-*"), run / "metrics.json"]:
        path.unlink()  # what a kill before the first checkpoint leaves: config.json (and events)
    result = cli("fit", "image", "--resume", "--out", run, "--quiet")
    assert result.code == 0, result.err
    [line] = [line for line in result.err.splitlines() if "no checkpoint yet" in line]
    assert "starting again from step 0" in line
    assert json.loads((run / "metrics.json").read_text())["steps"] == 20


def test_a_failed_resume_leaves_the_folder_exactly_as_it_was(run, cli):
    for meta in checkpoints(run):  # whole files, but tensors that fit no model
        tensors = load_file(meta.with_suffix(".safetensors"))
        save_file({k.replace("model.", "model.renamed."): v for k, v in tensors.items()},
                  meta.with_suffix(".safetensors"))
    before = snapshot(run)
    assert_user_error(cli("fit", "image", "--resume", "--out", run, "--steps", "40", "--quiet"),
                      match="does not match")
    assert snapshot(run) == before  # config.json (steps 40 by then) restored; no new events file


def test_an_interrupted_resume_leaves_the_folder_exactly_as_it_was(run, cli, monkeypatch):
    before = snapshot(run)
    slow_loss(monkeypatch, 0.0, fail_at=25)
    result = cli("fit", "image", "--resume", "--out", run, "--steps", "40", "--checkpoint-every", "10", "--quiet")
    assert result.code == 130
    assert snapshot(run) == before


def test_leftovers_of_interrupted_writes_are_removed_at_the_next_start(run, cli):
    junk = [".config.json.abcd1234.tmp.json", ".checkpoint-00000030.safetensors.k2j3h4g5.tmp.safetensors",
            ".tmpAb12Cd", "checkpoint-00000030.safetensors"]  # ours, safetensors', tensors without their .json
    for name in junk:
        (run / name).write_bytes(b"half")
    (run / ".keep-me").write_text("not ours")
    result = cli("fit", "image", "--resume", "--out", run, "--quiet")
    assert result.code == 0, result.err
    assert not any((run / name).exists() for name in junk)
    assert (run / ".keep-me").exists() and len(checkpoints(run)) == 2


# -- 2. one validated run manifest --------------------------------------------------------------------------

def edit_config(run: Path, change) -> None:
    path = run / "config.json"
    data = json.loads(path.read_text())
    data = change(data)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def setting(key, value):
    return lambda data: {**data, key: value}


def without(key):
    return lambda data: {k: v for k, v in data.items() if k != key}


TAMPERED = {
    "steps-string": (setting("steps", "1e9"), "steps=\"1e9\", which must be an integer"),
    "steps-bool": (setting("steps", True), "steps=true"),
    "steps-zero": (setting("steps", 0), "out of range: --steps"),
    "lr-string": (setting("lr", "fast"), "lr=\"fast\", which must be a finite number or null"),
    "size-items": (setting("size", [16, "x"]), "size=.*a list of integers"),
    "options-list": (setting("field_options", [1]), "field_options"),
    "eval-at-null": (setting("eval_at", None), "eval_at=null"),
    "missing-steps": (without("steps"), "missing the setting 'steps'"),
    "missing-spec": (without("field_spec"), "missing the key 'field_spec'"),
    "unknown-key": (setting("bogus", 1), "unknown key 'bogus'"),
    "top-list": (lambda data: [data], "must hold a JSON object.*not a list"),
    "top-null": (lambda data: None, "must hold a JSON object.*not null"),
    "bad-kind": (setting("kind", "fit-banana"), "kind=\"fit-banana\""),
    "other-kind": (setting("kind", "fit-audio"), "is (a fit-audio|an audio) run"),
    "newer-format": (setting("format", 2), "format 2, newer"),
    "format-string": (setting("format", "1"), "format=\"1\""),
    "not-json": (lambda data: "{ not json", "not valid JSON"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_config_json_is_one_sentence_naming_the_key(run, cli, tmp_path, case):
    change, match = TAMPERED[case]
    edit_config(run, change)
    before = snapshot(run)
    assert_user_error(cli("render", run, "--scale", "1", "--out", tmp_path / "x.png"), tmp_path / "x.png",
                      match=match)
    assert_user_error(cli("fit", "image", "--resume", "--out", run, "--steps", "30", "--quiet"), match=match)
    assert snapshot(run) == before


CONFIG_FILES = {
    "steps-string": ({"steps": "1e9"}, "steps=\"1e9\", which must be an integer"),
    "width-bool": ({"checkpoint_every": False}, "checkpoint_every=false"),
    "size-string": ({"size": "16"}, "size=\"16\", which must be a list of integers or null"),
    "top-list": ([{"steps": 5}], "must hold a JSON object of settings, not list"),
    "top-null": (None, "must hold a JSON object of settings, not null"),
    "other-kind": ({"kind": "fit-audio", "steps": 5}, "holds a fit-audio run's settings"),
    "unknown": ({"stepz": 5}, "unknown settings: stepz"),
}


@pytest.mark.parametrize("case", CONFIG_FILES)
def test_a_bad_config_file_is_one_sentence_naming_the_key(cli, image_png, tmp_path, case):
    content, match = CONFIG_FILES[case]
    (tmp_path / "settings.json").write_text(json.dumps(content))
    assert_user_error(cli("fit", "image", image_png, "--config", tmp_path / "settings.json", "--out", "x", *FIT),
                      tmp_path / "x", match=match)


def test_a_tampered_fit_images_manifest_is_one_sentence(cli, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(to_uint8(make_image(8, 8, 1))).save(images / f"{i}.png")
    assert cli("fit", "images", images, "--out", "run", "--steps", "3", "--quiet", "--device", "cpu",
               "-o", "width=8").code == 0
    edit_config(tmp_path / "run", setting("batch", "all"))
    assert_user_error(cli("render", "run", "--index", "0", "--scale", "1", "--out", "x.png"), tmp_path / "x.png",
                      match="batch=\"all\", which must be an integer")


def test_a_run_written_before_manifests_still_loads(run, cli, tmp_path):
    """config.json as the main branch wrote it before this change: no kind, no format, no `seconds`."""
    edit_config(run, lambda data: {k: v for k, v in data.items() if k not in ("kind", "format", "seconds")})
    assert run_kind(run) == "fit-image"
    assert nfields.load_fitted(run, device="cpu").height == 16
    assert cli("render", run, "--scale", "1", "--out", tmp_path / "x.png").code == 0
    result = cli("fit", "image", "--resume", "--out", run, "--steps", "30", "--quiet")
    assert result.code == 0, result.err
    assert json.loads((run / "config.json").read_text())["kind"] == "fit-image"  # written anew by the resume


def test_legacy_kinds_are_inferred_from_the_keys_they_hold():
    assert legacy_kind({"ginr": {}, "field": "locality"}) == "train-ginr"
    assert legacy_kind({"ginr": {}, "field": "mnif"}) == "train-mnif"
    assert legacy_kind({"image": {"height": 2}}) == "fit-image"
    assert legacy_kind({"image": {"height": 2, "count": 3}}) == "fit-images"
    for key, kind in (("audio", "fit-audio"), ("video", "fit-video"), ("shape", "fit-shape"), ("scene", "fit-scene"),
                      ("diffusion", "train-diffusion"), ("inr_gan", "train-inr-gan")):
        assert legacy_kind({key: {}}) == kind and kind in KINDS
    assert legacy_kind({"theme": "dark"}) is None


def test_run_kind_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(nfields.NfieldsError, match="not a run folder"):
        run_kind(tmp_path)


# -- 5. budgets kept -------------------------------------------------------------------------------------------

TRAINING_COMMANDS = [["fit", "image"], ["fit", "images"], ["fit", "audio"], ["fit", "video"], ["fit", "shape"],
                     ["fit", "scene"], ["train", "ginr"], ["train", "mnif"], ["train", "diffusion"],
                     ["train", "inr-gan"]]


@pytest.mark.parametrize("command", TRAINING_COMMANDS, ids=" ".join)
def test_every_training_command_takes_seconds(command):
    args = build_parser().parse_args([*command, "--seconds", "90"])
    assert args.seconds == 90.0


def test_seconds_stops_within_one_step_of_the_limit(cli, image_png, tmp_path, monkeypatch):
    slow_loss(monkeypatch, 0.2)
    steps = []
    step = Trainer._train_step

    def timed(self, zero_grad):
        started = time.perf_counter()
        result = step(self, zero_grad)
        steps.append(time.perf_counter() - started)
        return result

    monkeypatch.setattr(Trainer, "_train_step", timed)
    result = cli("fit", "image", image_png, "--out", "run", "--steps", "50", "--seconds", "1", *FIT)
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Log points come every 25 steps; the clock is read after each step: it stopped at the first step past 1 s.
    assert metrics["steps"] == len(steps) < 25
    assert sum(steps[:-1]) < 1.0 <= metrics["seconds"] < 1.0 + steps[-1] + 0.1


def test_a_negative_or_infinite_budget_is_refused(cli, image_png):
    for value in ("-1", "inf"):
        assert_user_error(cli("fit", "image", image_png, "--out", "run", "--seconds", value, *FIT), match="--seconds")


def test_a_long_cpu_run_says_so_with_advice(cli, image_png, monkeypatch):
    monkeypatch.setattr("nfields.train.trainer.SLOW_RUN_SECONDS", 0.2)
    slow_loss(monkeypatch, 0.02)
    result = cli("fit", "image", image_png, "--out", "run", "--steps", "40", *FIT)
    assert result.code == 0, result.err
    [line] = [line for line in result.err.splitlines() if "would take" in line]
    assert "on the CPU" in line and "fewer steps" in line and "--device cuda" in line


def test_a_short_cpu_run_says_nothing(cli, image_png):
    result = cli("fit", "image", image_png, "--out", "run", "--steps", "20", *FIT)
    assert result.code == 0 and result.err == ""


class _ToyObjective:
    def __init__(self, delay: float):
        self.model = torch.nn.Linear(2, 1)
        self.delay = delay

    def loss(self, step):
        time.sleep(self.delay)
        return self.model(torch.ones(4, 2)).pow(2).mean(), {}

    def evaluate(self):
        return {}


def _vote_worker(rank: int, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))  # a lost peer fails the test, not CI's clock
    try:
        objective = _ToyObjective(0.05 if rank == 0 else 0.0)  # rank 1's own clock would never stop it
        trainer = Trainer(objective, torch.optim.SGD(objective.model.parameters(), lr=0.01), None,
                          TrainerConfig(steps=100000, log_every=10**6, checkpoint_every=10**6, progress=False,
                                        max_seconds=0.5))
        trainer.fit()
        Path(f"{out}.{rank}").write_text(json.dumps({"step": trainer.step, "seconds": trainer.seconds}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_stop_at_the_same_step(tmp_path):
    """Under torchrun the ranks vote on the clock every step (one step late, no host sync): they stop together,
    within a step or two of the limit, though only one rank's steps are slow."""
    torch.multiprocessing.spawn(_vote_worker, args=(str(tmp_path / "rdv"), str(tmp_path / "done")), nprocs=2,
                                join=True)
    ranks = [json.loads((tmp_path / f"done.{r}").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] < 100
    assert 0.5 <= ranks[0]["seconds"] < 0.5 + 3 * 0.05 + 0.3
