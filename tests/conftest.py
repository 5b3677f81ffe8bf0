"""Shared fixtures: tiny test images, the CLI run in-process, and the CLI run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors in the interpreter; it must be set before any @triton.jit runs.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def make_image(height: int = 32, width: int = 32, channels: int = 1) -> np.ndarray:
    """(H, W, C) float32 in [0, 1], exactly 8-bit representable: a smooth gradient (low
    frequencies) plus a bright bar, a dark square and a diagonal edge (sharp edges, high ones)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = 0.15 + 0.5 * x / max(width - 1, 1) + 0.15 * y / max(height - 1, 1)
    img[height // 4: height // 2, width // 4: 3 * width // 4] = 0.95
    img[5 * height // 8: 7 * height // 8, width // 8: 3 * width // 8] = 0.05
    img[(x - y) > 0.6 * width] = 0.7
    planes = [img, img[:, ::-1], 1.0 - img, np.full_like(img, 1.0)][:channels]
    return (np.round(np.stack(planes, -1) * 255) / 255).astype(np.float32)


def to_uint8(values: np.ndarray) -> np.ndarray:
    array = np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)
    return array[..., 0] if array.shape[-1] == 1 else array


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    # The machine this suite is sized for has 2 cores; more threads only add overhead for tiny fields.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


@pytest.fixture(scope="session")
def image_array():
    """The test image as an array: `image_array(h, w, channels)`."""
    return make_image


@pytest.fixture
def image_png(tmp_path) -> Path:
    """A 48x48 RGB 8-bit PNG of the gradient + edges test image (fits use --size 32)."""
    path = tmp_path / "test.png"
    Image.fromarray(to_uint8(make_image(48, 48, 3))).save(path)
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def _call_main(argv: list[str]) -> int:
    from nfields.cli.main import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse errors exit (code 2)
        return exit_.code if isinstance(exit_.code, int) else 1


@pytest.fixture
def cli(capsys, tmp_path, monkeypatch):
    """`cli(*argv)` runs `nfields.cli.main.main(argv)` in this process (cwd = tmp_path) and returns
    CliResult(code, out, err) with what it printed."""
    monkeypatch.chdir(tmp_path)

    def run(*argv) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        code = _call_main(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_cli_quietly(*argv) -> CliResult:
    """The CLI in-process without capsys (for module-scoped fixtures)."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = _call_main(list(argv))
    return CliResult(code, out.getvalue(), err.getvalue())


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def nfields_process(tmp_path):
    """`nfields_process(*argv)` starts `python -m nfields argv...` as a real child process
    (cwd = tmp_path, stdout/stderr piped) and returns the Popen; every child is reaped at teardown."""
    started: list[subprocess.Popen] = []

    def start(*argv, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "nfields", *map(str, argv)], cwd=tmp_path,
                                env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory) -> Path:
    """One finished SIREN run folder (32x32 RGB, 60 steps) shared by a module's render/export tests.
    Tests must not modify it."""
    root = tmp_path_factory.mktemp("fitted")
    source = root / "test.png"
    Image.fromarray(to_uint8(make_image(48, 48, 3))).save(source)
    out = root / "run"
    result = run_cli_quietly("fit", "image", source, "--field", "siren", "--size", "32", "--steps", "60",
                             "--out", out, "--quiet", "-o", "width=32", "--device", "cpu")
    assert result.code == 0, result.err
    return out


@pytest.fixture(scope="session")
def kind_runs(tmp_path_factory) -> dict[str, Path]:
    """Finished tiny runs of kinds image, audio, video and shape (tests/kinds_helpers.py), shared by the
    session; `kind_runs["root"]` is the folder that holds them and their sources. Tests must not modify them."""
    from kinds_helpers import make_runs

    root = tmp_path_factory.mktemp("kinds")
    return {"root": root, **make_runs(root)}
