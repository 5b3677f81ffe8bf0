"""Image datasets: Fashion-MNIST (IDX files), Noto colour emoji (CBDT bitmaps, cached), folders of images,
and the one-sentence errors for bad input."""

from __future__ import annotations

import dataclasses
import gzip
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from nfields import NfieldsError, catalog
from nfields.data import datasets, load_dataset

FASHION = catalog.ENTRIES["fashion-mnist"].path() is not None
EMOJI = catalog.ENTRIES["emoji"].path() is not None
needs_fashion = pytest.mark.skipif(not FASHION, reason="Debian dataset-fashion-mnist not installed")
needs_emoji = pytest.mark.skipif(not EMOJI, reason="Debian fonts-noto-color-emoji not installed")


# -- Fashion-MNIST ---------------------------------------------------------------------------------

@needs_fashion
def test_fashion_mnist_official_split():
    train = load_dataset("fashion-mnist")
    assert len(train) == 60000 and train.images.shape == (60000, 28, 28, 1)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert (train.height, train.width, train.channels) == (28, 28, 1)
    assert set(train.labels.unique().tolist()) == set(range(10))
    assert train.labels[0].item() == 9 and train.classes[9] == "Ankle boot"
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10
    assert train.names[0] == "train-00000" and train.split == "train"
    test = load_dataset("fashion-mnist", split="test")
    assert len(test) == 10000 and test.images.shape[1:] == (28, 28, 1)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


@needs_fashion
def test_fashion_mnist_size_limit_and_floats():
    data = load_dataset("fashion-mnist", split="test", size=32, limit=50)
    assert data.images.shape == (50, 32, 32, 1) and len(data.labels) == 50 and len(data.names) == 50
    floats = data.float_images()
    assert floats.dtype == torch.float32 and floats.shape == (50, 32, 32, 1)
    assert 0 <= floats.min() and floats.max() <= 1 and floats.max() > 0.5
    assert torch.equal(data.batch([3, 1]), floats[[3, 1]])
    assert data.images.dtype == torch.uint8  # storage stays 8-bit


def _fake_fashion(folder, images=b"", labels=b"", image_magic=2051, count=2):
    folder.mkdir()
    for part in ("train", "t10k"):
        with gzip.open(folder / f"{part}-images-idx3-ubyte.gz", "wb") as f:
            f.write(image_magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (count, 28, 28))
                    + (images or bytes(count * 28 * 28)))
        with gzip.open(folder / f"{part}-labels-idx1-ubyte.gz", "wb") as f:
            f.write((2049).to_bytes(4, "big") + count.to_bytes(4, "big") + (labels or bytes([9] * count)))
    return folder


def _point(monkeypatch, name, path):
    monkeypatch.setitem(catalog.ENTRIES, name, dataclasses.replace(catalog.ENTRIES[name], relative_path=str(path)))


def test_fashion_mnist_idx_parsing_and_corrupt_files(tmp_path, monkeypatch):
    _point(monkeypatch, "fashion-mnist", _fake_fashion(tmp_path / "good"))
    data = load_dataset("fashion-mnist", split="all")
    assert data.images.shape == (4, 28, 28, 1) and data.labels.tolist() == [9] * 4
    _point(monkeypatch, "fashion-mnist", _fake_fashion(tmp_path / "magic", image_magic=2049))
    with pytest.raises(NfieldsError, match="magic number"):
        load_dataset("fashion-mnist")
    _point(monkeypatch, "fashion-mnist", _fake_fashion(tmp_path / "short", images=bytes(100)))
    with pytest.raises(NfieldsError, match="header promises"):
        load_dataset("fashion-mnist")
    folder = _fake_fashion(tmp_path / "notgzip")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    _point(monkeypatch, "fashion-mnist", folder)
    with pytest.raises(NfieldsError, match="could not be read"):
        load_dataset("fashion-mnist")


# -- emoji -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def emoji_cache(tmp_path_factory):
    """A private XDG_CACHE_HOME for this module, and the time of the first (uncached) 16x16 load."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("xdg")
        patch.setenv("XDG_CACHE_HOME", str(root))
        start = time.perf_counter()
        everything = load_dataset("emoji", split="all", size=16)
        yield root / "nfields", everything, time.perf_counter() - start


@needs_emoji
def test_emoji_images(emoji_cache):
    _, everything, _ = emoji_cache
    assert len(everything) > 3000 and everything.labels is None
    assert everything.images.shape[1:] == (16, 16, 3) and everything.images.dtype == torch.uint8
    assert everything.names == sorted(everything.names)
    floats = everything.batch(range(200))
    assert 0 <= floats.min() and floats.max() <= 1
    corners = floats[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # composited on white, padded to a square
    assert corners.mean() > 0.95
    assert floats.std() > 0.1  # real pictures, not blank


@needs_emoji
def test_emoji_split_is_fixed_and_cache_is_reused(emoji_cache, monkeypatch):
    cache, everything, first_seconds = emoji_cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent))
    files = list(cache.glob("emoji-16x16-*.npz"))
    assert len(files) == 1

    def no_decoding(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(datasets, "_decode_emoji", no_decoding)
    start = time.perf_counter()
    train = load_dataset("emoji", split="train", size=16)
    cached_seconds = time.perf_counter() - start
    test = load_dataset("emoji", split="test", size=16)
    assert not set(train.names) & set(test.names)
    assert len(train) + len(test) == len(everything)
    assert test.names == everything.names[::10]
    assert torch.equal(test.images, everything.images[::10])
    assert load_dataset("emoji", split="test", size=16).names == test.names  # deterministic
    small = load_dataset("emoji", split="train", size=16, limit=5)
    assert small.names == train.names[:5] and torch.equal(small.images, train.images[:5])
    assert cached_seconds < first_seconds


@needs_emoji
def test_emoji_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    font = catalog.ENTRIES["emoji"].path()
    cache = datasets._emoji_cache_path(font, (4, 4))
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"broken")
    data = load_dataset("emoji", split="test", size=4, limit=3)
    assert data.images.shape == (3, 4, 4, 3)
    with np.load(cache) as saved:  # replaced by a good one
        assert saved["images"].shape[1:] == (4, 4, 3)


# -- folders -------------------------------------------------------------------------------------------

def _save(path, array):
    Image.fromarray(array).save(path)


def test_folder_dataset_with_split(tmp_path, image_array):
    rng = np.random.default_rng(0)
    for i in range(12):
        gray = (rng.random((10, 8)) * 255).astype(np.uint8)
        _save(tmp_path / f"img{i:02d}.png", gray)
    (tmp_path / "notes.txt").write_text("not an image")
    everything = load_dataset(tmp_path, split="all")
    assert everything.images.shape == (12, 10, 8, 1) and everything.labels is None
    assert everything.names[0] == "img00.png" and everything.name == tmp_path.name
    test = load_dataset(tmp_path, split="test")
    assert test.names == ["img00.png", "img10.png"]
    train = load_dataset(tmp_path, split="train", size=(5, 4), limit=3)
    assert train.names == ["img01.png", "img02.png", "img03.png"] and train.images.shape == (3, 5, 4, 1)
    # one colour file makes every image RGB; transparency goes on white
    rgba = np.zeros((10, 8, 4), np.uint8)
    _save(tmp_path / "img99.png", rgba)
    colour = load_dataset(tmp_path, split="all")
    assert colour.channels == 3 and len(colour) == 13
    assert colour.images[-1].min() == 255  # fully transparent -> white
    assert torch.equal(colour.images[0, ..., 0], everything.images[0, ..., 0])


def test_folder_mixed_sizes_need_size(tmp_path):
    _save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    _save(tmp_path / "b.jpg", np.full((12, 6, 3), 200, np.uint8))
    with pytest.raises(NfieldsError, match=r"mixed image sizes .*; pass --size"):
        load_dataset(tmp_path, split="all")
    assert load_dataset(tmp_path, split="all", size=6).images.shape == (2, 6, 6, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(NfieldsError, match="holds no images"):
        load_dataset(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(NfieldsError, match="holds no images"):
        load_dataset(tmp_path)
    _save(tmp_path / "only.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(NfieldsError, match="no images in its 'train' split"):
        load_dataset(tmp_path, split="train")  # the only file is test
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(NfieldsError, match="broken.png"):
        load_dataset(tmp_path, split="all")
    with pytest.raises(NfieldsError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(NfieldsError, match="is a file"):
        load_dataset(tmp_path / "a.txt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        with pytest.raises(NfieldsError, match="cannot read folder"):
            load_dataset(folder)
    finally:
        folder.chmod(0o755)


# -- bad input -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(source="fashion-mnst"), r"unknown dataset 'fashion-mnst' \(did you mean 'fashion-mnist'\?\)"),
    (dict(source="emoij"), r"did you mean 'emoji'"),
    (dict(source="fashion-mnist", split="validation"), r"unknown split 'validation'.*train, test, all"),
    (dict(source="emoji", size=0), "size must be"),
    (dict(source="emoji", size=(8, -1)), "size must be"),
    (dict(source="fashion-mnist", limit=0), "limit must be a positive"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(NfieldsError, match=match):
        load_dataset(**kwargs)


@pytest.mark.parametrize("name,package", [("fashion-mnist", "dataset-fashion-mnist"),
                                          ("emoji", "fonts-noto-color-emoji")])
def test_not_installed(tmp_path, monkeypatch, name, package):
    _point(monkeypatch, name, tmp_path / "absent")
    with pytest.raises(NfieldsError, match=f"not installed; run 'apt-get install {package}' first"):
        load_dataset(name)


def test_datasets_are_listed(cli):
    result = cli("datasets")
    assert result.code == 0
    for name, package in [("fashion-mnist", "dataset-fashion-mnist"), ("emoji", "fonts-noto-color-emoji")]:
        line = next(line for line in result.out.splitlines() if line.startswith(name + " "))
        assert " dataset " in line
        assert ("[installed]" in line) == (catalog.ENTRIES[name].path() is not None)
        assert "[installed]" in line or package in line


def test_dataset_is_not_an_image(cli):
    if not FASHION:
        pytest.skip("Debian dataset-fashion-mnist not installed")
    result = cli("fit", "image", "fashion-mnist", "--steps", "1", "--out", "run")
    assert result.code == 2 and "is dataset, not an image" in result.err


def test_a_folder_with_train_and_test_subfolders_is_split_by_them(tmp_path):
    rng = np.random.default_rng(0)
    for part, count in (("train", 3), ("test", 2)):
        (tmp_path / part).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / part / f"{i}.png")
    assert [len(load_dataset(tmp_path, split)) for split in ("train", "test", "all")] == [3, 2, 5]
    assert load_dataset(tmp_path, "test").names == ["0.png", "1.png"]
