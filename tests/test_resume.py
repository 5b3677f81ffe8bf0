"""Checkpoints and resuming: in-process, after a real SIGKILL, and past a damaged checkpoint."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nfields
from nfields.train.checkpoint import PATTERN, checkpoints, load_latest

FIT = ["--size", "32", "--quiet", "--device", "cpu", "-o", "width=32"]


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(PATTERN.search(p.name).group(1)) for p in checkpoints(run))


def checkpoint_meta(run: Path, step: int) -> dict:
    return json.loads((run / f"checkpoint-{step:08d}.json").read_text())


def model_tensors(run: Path, step: int) -> dict[str, torch.Tensor]:
    tensors = load_file(str(run / f"checkpoint-{step:08d}.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def assert_no_checkpoint_lookalikes(run: Path):
    """Temporary files from an interrupted write may remain, but hidden and never taken for a checkpoint."""
    for path in run.iterdir():
        if ".tmp" in path.name:
            assert path.name.startswith("."), path.name
    listed = checkpoints(run)
    assert all(".tmp" not in p.name and not p.name.startswith(".") for p in listed)
    for meta in listed:
        assert meta.with_suffix(".safetensors").exists()


# -- (a) in-process --------------------------------------------------------------------------------

def test_resume_continues_from_the_last_step(cli, image_png, tmp_path):
    run = tmp_path / "run"
    first = cli("fit", "image", image_png, "--out", run, "--steps", "40", "--checkpoint-every", "10",
                "--log-every", "5", *FIT)
    assert first.code == 0, first.err
    assert checkpoint_steps(run) == [30, 40]  # the two newest are kept
    at_40 = checkpoint_meta(run, 40)
    assert [p["step"] for p in at_40["history"]["train"]] == list(range(5, 41, 5))

    second = cli("fit", "image", "--resume", "--out", run, "--steps", "80", "--quiet")
    assert second.code == 0, second.err
    assert "after 80 steps" in second.out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 80
    assert [e["step"] for e in metrics["history"]] == [40, 80]  # the first run's final eval is kept
    assert checkpoint_steps(run) == [70, 80]

    train = checkpoint_meta(run, 80)["history"]["train"]
    assert [p["step"] for p in train] == list(range(5, 81, 5))  # continuous: no gap, no repeat
    assert train[:8] == at_40["history"]["train"]  # the first 40 steps were not redone
    seconds = [p["seconds"] for p in train]
    assert seconds == sorted(seconds)  # the clock continues too
    assert metrics["seconds"] >= at_40["seconds"]


def test_resume_is_the_same_as_running_straight_through(cli, image_png, tmp_path):
    """Model, Adam state and RNG are all restored: 40 + 40 steps give the weights of 80 steps."""
    split, straight = tmp_path / "split", tmp_path / "straight"
    assert cli("fit", "image", image_png, "--out", split, "--steps", "40", "--batch-pixels", "256", *FIT).code == 0
    assert cli("fit", "image", "--resume", "--out", split, "--steps", "80", "--quiet").code == 0
    assert cli("fit", "image", image_png, "--out", straight, "--steps", "80", "--batch-pixels", "256",
               *FIT).code == 0
    a, b = model_tensors(split, 80), model_tensors(straight, 80)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resume_of_a_finished_run_does_nothing_more(cli, image_png, tmp_path):
    run = tmp_path / "run"
    assert cli("fit", "image", image_png, "--out", run, "--steps", "20", *FIT).code == 0
    before = model_tensors(run, 20)
    result = cli("fit", "image", "--resume", "--out", run, "--quiet")
    assert result.code == 0, result.err
    assert json.loads((run / "metrics.json").read_text())["steps"] == 20
    assert checkpoint_steps(run) == [20]
    for name, tensor in model_tensors(run, 20).items():
        torch.testing.assert_close(tensor, before[name])


# -- (b) a real SIGKILL ----------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_then_resume(nfields_process, image_png, tmp_path):
    run = tmp_path / "run"
    argv = ["fit", "image", image_png, "--out", run, "--steps", "400", "--checkpoint-every", "20",
            "--log-every", "1", "--size", "32", "--quiet", "--device", "cpu", "--width", "64"]
    proc = nfields_process(*argv)
    # Wait for the checkpoint at step 100 (one interval takes ~65 ms here, the rest of the run ~1 s),
    # then kill at an offset that is no multiple of the interval: somewhere in steps 100-140,
    # possibly in the middle of writing a checkpoint or deleting an old one.
    deadline = time.monotonic() + 120
    while not (run / "checkpoint-00000100.json").exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before step 100: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail("no checkpoint at step 100 within 120 s")
        time.sleep(0.002)
    time.sleep(0.03)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "metrics.json").exists()

    # What the kill left: whole checkpoints at multiples of the interval, nothing that looks like one.
    assert_no_checkpoint_lookalikes(run)
    steps = checkpoint_steps(run)
    assert steps and all(s % 20 == 0 for s in steps) and len(steps) <= 2
    if len(steps) == 2:
        assert steps[1] - steps[0] == 20
    newest = steps[-1]
    found = load_latest(run)
    assert found is not None
    tensors, meta = found
    assert meta["step"] == newest
    model = nfields.fields.field_from_spec(json.loads((run / "config.json").read_text())["field_spec"])
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    killed_history = meta["history"]["train"]
    assert [p["step"] for p in killed_history] == list(range(1, newest + 1))

    resumed = nfields_process(*argv, "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "Traceback" not in err
    assert "after 400 steps" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 400
    assert_no_checkpoint_lookalikes(run)
    assert checkpoint_steps(run) == [380, 400]

    train = checkpoint_meta(run, 400)["history"]["train"]
    assert [p["step"] for p in train] == list(range(1, 401))
    # It started from the newest checkpoint: its log (down to the seconds, which a redone step
    # would not reproduce) is kept verbatim, so at most the steps after it, less than one
    # --checkpoint-every interval, were lost.
    assert train[:newest] == killed_history


# -- (c) damaged checkpoints -----------------------------------------------------------------------

@pytest.fixture
def run_with_two_checkpoints(cli, image_png, tmp_path) -> Path:
    run = tmp_path / "run"
    result = cli("fit", "image", image_png, "--out", run, "--steps", "30", "--checkpoint-every", "10", *FIT)
    assert result.code == 0, result.err
    assert checkpoint_steps(run) == [20, 30]
    return run


def truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(run_with_two_checkpoints):
    run = run_with_two_checkpoints
    truncate(run / "checkpoint-00000030.safetensors")
    found = load_latest(run)
    assert found is not None and found[1]["step"] == 20


@pytest.mark.parametrize("damage", ["json-garbage", "json-truncated", "safetensors-missing", "json-missing"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(run_with_two_checkpoints, damage):
    run = run_with_two_checkpoints
    newest = run / "checkpoint-00000030"
    if damage == "json-garbage":
        newest.with_suffix(".json").write_text("{ not json")
    elif damage == "json-truncated":
        truncate(newest.with_suffix(".json"))
    elif damage == "safetensors-missing":
        newest.with_suffix(".safetensors").unlink()
    else:
        newest.with_suffix(".json").unlink()
    found = load_latest(run)
    assert found is not None
    tensors, meta = found
    assert meta["step"] == 20
    assert any(k.startswith("model.") for k in tensors)


def test_resume_after_damage_continues_from_the_previous_checkpoint(cli, run_with_two_checkpoints):
    run = run_with_two_checkpoints
    (run / "checkpoint-00000030.json").write_text("{ not json")
    result = cli("fit", "image", "--resume", "--out", run, "--steps", "40", "--quiet")
    assert result.code == 0, result.err
    assert json.loads((run / "metrics.json").read_text())["steps"] == 40
    assert checkpoint_meta(run, 40)["step"] == 40


def test_render_falls_back_past_a_truncated_checkpoint(cli, run_with_two_checkpoints, tmp_path):
    run = run_with_two_checkpoints
    truncate(run / "checkpoint-00000030.safetensors")
    result = cli("render", run, "--scale", "1", "--out", tmp_path / "x.png")
    assert result.code == 0, result.err


def test_all_checkpoints_damaged(run_with_two_checkpoints, cli, tmp_path):
    run = run_with_two_checkpoints
    for meta in checkpoints(run):
        meta.write_text("garbage")
    with pytest.raises(nfields.NfieldsError, match="no checkpoint .* reads back whole"):
        load_latest(run)  # never taken for a run without checkpoints (which would start again from step 0)
    result = cli("render", run, "--scale", "1", "--out", tmp_path / "x.png")
    assert result.code == 2 and "reads back whole" in result.err and "Traceback" not in result.err


def test_checkpoint_directory_keeps_two():
    from nfields.train.checkpoint import save_checkpoint

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder)
        for step in (5, 10, 15, 20):
            save_checkpoint(run, step, {"w": torch.full((3,), float(step))}, {"note": step})
        assert checkpoint_steps(run) == [15, 20]
        assert sorted(p.name for p in run.iterdir()) == [
            "checkpoint-00000015.json", "checkpoint-00000015.safetensors",
            "checkpoint-00000020.json", "checkpoint-00000020.safetensors"]
        tensors, meta = load_latest(run)
        assert meta == {"step": 20, "note": 20}
        torch.testing.assert_close(tensors["w"], torch.full((3,), 20.0))
