"""Every ```python block of README.md runs, in order, in one namespace, in a temporary folder: the README
cannot go stale.

A block whose first line is a comment starting with `# not run in tests:` (and the reason: needs CUDA,
takes minutes) is skipped; keep that list tiny. The only changes made to the code are the settings in
TINY below, which shrink steps and sizes so that the blocks finish in seconds on CPU; each must still
occur in the README, so a README edit that drops one fails here and the table is kept honest.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

SKIP_MARK = "# not run in tests:"
#: README text -> what runs instead (steps and sizes only).
TINY = {
    'nfields.load_image("camera", size=(256,))': 'nfields.load_image("camera", size=(32,))',
    "steps=500": "steps=2",
    "steps=1000": "steps=2",
    "limit=1000, batch=512": "limit=8, batch=4, steps=2",
    'nfields.load_audio("front-center")': 'nfields.load_audio("front-center", max_seconds=0.05)',
    'frames=30, size=(136,)': "frames=2, size=(16,)",
    "size=(272, 640)": "size=(16, 38)",
    'load_dataset("fashion-mnist", split="train", size=32)': 'load_dataset("fashion-mnist", split="test", size=32, limit=16)',
}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_blocks_and_every_tiny_setting_is_in_it():
    text = (REPO / "README.md").read_text()
    assert len(python_blocks(text)) >= 4
    for original in TINY:
        assert original in text, f"README no longer has {original!r}; update TINY in this test"


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the emoji cache, written on first use
    photos = tmp_path / "photos"  # the README's own folder of images
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photos / f"{i:02d}.png")

    namespace: dict = {"__name__": "readme"}
    ran = 0
    for number, block in enumerate(python_blocks((REPO / "README.md").read_text()), 1):
        if block.lstrip().startswith(SKIP_MARK):
            continue
        for original, tiny in TINY.items():
            block = block.replace(original, tiny)
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message names the block
            pytest.fail(f"README python block {number} failed: {type(error).__name__}: {error}\n{block}")
        ran += 1
    assert ran >= 4
