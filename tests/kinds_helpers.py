"""Tiny finished runs of each single-signal kind (image, audio, video, shape) and the files they were fitted to,
for tests of what every command does with every kind of run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from conftest import make_image, run_cli_quietly, to_uint8

COMMON = ["--quiet", "--device", "cpu", "--checkpoint-every", "1000"]
RATE = 8000


def write_sources(root: Path) -> dict[str, Path]:
    """A 24x24 RGB PNG, a 0.1 s two-sine WAV, an 8-frame 24x32 MP4 and a sphere OFF under `root`."""
    import soundfile
    import trimesh

    from nfields.data.video import write_video

    root.mkdir(parents=True, exist_ok=True)
    sources = {"image": root / "image.png", "audio": root / "tone.wav", "video": root / "square.mp4",
               "shape": root / "sphere.off"}
    Image.fromarray(to_uint8(make_image(24, 24, 3))).save(sources["image"])
    t = np.arange(int(0.1 * RATE)) / RATE
    soundfile.write(sources["audio"], (0.5 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t))
                    .astype(np.float32), RATE, subtype="PCM_16")
    video = np.full((8, 24, 32, 3), 40, np.uint8)
    for i in range(8):
        video[i, 6:14, 2 + 3 * i: 10 + 3 * i] = (220, 200, 180)
    write_video(video, sources["video"], fps=12)
    trimesh.creation.icosphere(subdivisions=2, radius=1.0).export(sources["shape"])
    return sources


def make_runs(root: Path) -> dict[str, Path]:
    """Finished runs of kinds image, audio, video and shape under `root` (a few seconds on CPU in all)."""
    sources = write_sources(root / "sources")
    flags = {
        "image": ["--steps", "20", "-o", "width=16"],
        "audio": ["--steps", "20", "-o", "width=16"],
        "video": ["--steps", "20", "-o", "width=16", "--batch-pixels", "1024"],
        "shape": ["--steps", "20", "--resolution", "16", "--batch-points", "200", "--surface-samples", "2000",
                  "--pool-points", "2000", "--eval-points", "2000", "--field", "relu-pe", "-o", "width=16",
                  "-o", "frequencies=2", "--hidden-layers", "1"],
    }
    runs = {}
    for kind, extra in flags.items():
        out = root / f"{kind}-run"
        result = run_cli_quietly("fit", kind, sources[kind], "--out", out, *COMMON, *extra)
        assert result.code == 0, (kind, result.err)
        runs[kind] = out
    return runs
