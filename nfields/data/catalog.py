"""Built-in data: what ships inside installed packages, never downloaded at run time."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import NfieldsError
from ..registry import did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "image", later "dataset", "mesh", ...
    description: str
    package: str  # where it comes from, as a user would install it
    relative_path: str  # inside the package's directory

    def path(self) -> Path | None:
        """The local file, or None when its package is not installed."""
        module, _, _ = self.package.partition(" ")
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            return None
        candidate = Path(spec.origin).parent / self.relative_path
        return candidate if candidate.exists() else None


def _skimage(name: str, filename: str, description: str) -> Entry:
    return Entry(name, "image", description, "skimage (PyPI scikit-image)", f"data/{filename}")


ENTRIES: dict[str, Entry] = {e.name: e for e in [
    _skimage("camera", "camera.png", "cameraman, 512x512 gray (SIREN's image)"),
    _skimage("astronaut", "astronaut.png", "astronaut Eileen Collins, 512x512 RGB"),
    _skimage("chelsea", "chelsea.png", "Chelsea the cat, 300x451 RGB"),
    _skimage("coffee", "coffee.png", "a cup of coffee, 400x600 RGB"),
    _skimage("rocket", "rocket.jpg", "a rocket launch, 427x640 RGB"),
    _skimage("coins", "coins.png", "Greek coins, 303x384 gray"),
    _skimage("moon", "moon.png", "the moon's surface, 512x512 gray"),
    _skimage("text", "text.png", "printed text, 172x448 gray"),
    _skimage("page", "page.png", "a scanned page, 191x384 gray"),
    _skimage("brick", "brick.png", "a brick wall texture, 512x512 gray"),
    _skimage("grass", "grass.png", "a grass texture, 512x512 gray"),
    _skimage("gravel", "gravel.png", "a gravel texture, 512x512 gray"),
    _skimage("horse", "horse.png", "a horse silhouette, 328x400 binary"),
    _skimage("logo", "logo.png", "the scikit-image logo, 500x500 RGBA"),
    _skimage("retina", "retina.jpg", "a human retina, 1411x1411 RGB"),
    _skimage("hubble", "hubble_deep_field.jpg", "the Hubble deep field, 872x1000 RGB"),
    _skimage("ihc", "ihc.png", "immunohistochemistry stain, 512x512 RGB"),
    _skimage("phantom", "phantom.png", "Shepp-Logan phantom, 400x400 gray"),
]}


def entries() -> list[Entry]:
    return list(ENTRIES.values())


def locate(name: str) -> Path:
    """The file of a built-in, or NfieldsError saying how to get it."""
    if name not in ENTRIES:
        raise NfieldsError(f"'{name}' is neither a file nor a built-in name{did_you_mean(name, ENTRIES)}; "
                           f"run 'nfields datasets' to list the built-ins.")
    entry = ENTRIES[name]
    path = entry.path()
    if path is None:
        raise NfieldsError(f"built-in '{name}' is not installed; install {entry.package} first.")
    return path
