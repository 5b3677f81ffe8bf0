"""Loading images (formats, bit depths, sizes, built-ins), coordinate grids and image metrics."""

from __future__ import annotations

import math

import numpy as np
import png
import pytest
import tifffile
import torch
from PIL import Image
from skimage.metrics import structural_similarity

import nfields
from nfields.data.grid import axis, pixel_grid, region_axis
from nfields.data.image import target_size
from nfields.metrics import mse_to_psnr, psnr, ssim


def u8(values: np.ndarray) -> np.ndarray:
    array = np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)
    return array[..., 0] if array.shape[-1] == 1 else array


def random_u16(shape, seed=0) -> np.ndarray:
    """Random 16-bit values, including 0, 65535 and ones no 8-bit image can hold (1, 65534)."""
    array = np.random.default_rng(seed).integers(0, 65536, size=shape, dtype=np.uint16)
    flat = array.reshape(-1)
    flat[:3] = (1, 65534, 0)
    flat[3] = 65535
    return array


def check_unit_range(values: np.ndarray):
    assert values.dtype == np.float32
    assert values.min() >= 0.0 and values.max() <= 1.0


# -- 8-bit formats -------------------------------------------------------------------------------

@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB"), (4, "RGBA")])
def test_png_8bit(tmp_path, image_array, channels, mode):
    values = image_array(24, 40, channels)
    path = tmp_path / f"img-{mode}.png"
    Image.fromarray(u8(values), mode=mode).save(path)
    signal = nfields.load_image(path)
    assert signal.values.shape == (24, 40, channels)
    assert (signal.height, signal.width, signal.channels) == (24, 40, channels)
    check_unit_range(signal.values)
    np.testing.assert_allclose(signal.values, values, atol=1e-6)
    assert signal.name == f"img-{mode}"


def test_png_palette_and_bilevel(tmp_path, image_array):
    rgb = Image.fromarray(u8(image_array(16, 16, 3)))
    rgb.convert("P", palette=Image.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    signal = nfields.load_image(tmp_path / "p.png")
    assert signal.channels == 3
    check_unit_range(signal.values)
    Image.fromarray(u8(image_array(16, 16, 1))).convert("1").save(tmp_path / "b.png")
    bilevel = nfields.load_image(tmp_path / "b.png")
    assert bilevel.channels == 1 and set(np.unique(bilevel.values)) <= {0.0, 1.0}


def test_jpeg(tmp_path, image_array):
    values = image_array(32, 32, 3)
    Image.fromarray(u8(values)).save(tmp_path / "img.jpg", quality=95)
    signal = nfields.load_image(tmp_path / "img.jpg")
    assert signal.values.shape == (32, 32, 3)
    check_unit_range(signal.values)
    assert np.abs(signal.values - values).mean() < 0.03  # lossy, but close
    Image.fromarray(u8(image_array(32, 32, 1))).save(tmp_path / "gray.jpeg", quality=95)
    assert nfields.load_image(tmp_path / "gray.jpeg").channels == 1


def test_webp(tmp_path, image_array):
    values = image_array(32, 32, 3)
    Image.fromarray(u8(values)).save(tmp_path / "img.webp", lossless=True)
    signal = nfields.load_image(tmp_path / "img.webp")
    assert signal.values.shape == (32, 32, 3)
    check_unit_range(signal.values)
    np.testing.assert_allclose(signal.values, values, atol=1e-6)
    Image.fromarray(u8(values)).save(tmp_path / "lossy.webp", quality=90)
    assert np.abs(nfields.load_image(tmp_path / "lossy.webp").values - values).mean() < 0.05


def test_bmp_and_gif(tmp_path, image_array):
    values = image_array(16, 16, 3)
    Image.fromarray(u8(values)).save(tmp_path / "img.bmp")
    np.testing.assert_allclose(nfields.load_image(tmp_path / "img.bmp").values, values, atol=1e-6)
    Image.fromarray(u8(values)).save(tmp_path / "img.gif")
    gif = nfields.load_image(tmp_path / "img.gif")
    assert gif.values.shape[:2] == (16, 16) and gif.channels in (3, 4)
    check_unit_range(gif.values)


# -- 16-bit --------------------------------------------------------------------------------------

def assert_16bit_preserved(values: np.ndarray, raw: np.ndarray):
    check_unit_range(values)
    np.testing.assert_allclose(values, raw.astype(np.float64) / 65535, rtol=0, atol=1e-6)
    # Precision beyond 8 bits: the value 1/65535 survives, and many more than 256 levels exist.
    assert values.min() == 0.0 and values.max() == 1.0
    assert np.isclose(values, 1 / 65535, rtol=0, atol=1e-9).any()
    assert len(np.unique(values)) > 256


def test_png_16bit_gray(tmp_path):
    raw = random_u16((20, 30))
    png.from_array(raw, "L;16").save(str(tmp_path / "g16.png"))
    signal = nfields.load_image(tmp_path / "g16.png")
    assert signal.values.shape == (20, 30, 1)
    assert_16bit_preserved(signal.values[..., 0], raw)


@pytest.mark.parametrize("mode,planes", [("RGB;16", 3), ("RGBA;16", 4), ("LA;16", 2)])
def test_png_16bit_colour(tmp_path, mode, planes):
    raw = random_u16((20, 30, planes), seed=planes)
    png.from_array(raw.reshape(20, 30 * planes), mode).save(str(tmp_path / "c16.png"))
    signal = nfields.load_image(tmp_path / "c16.png")
    assert signal.values.shape == (20, 30, planes)
    assert_16bit_preserved(signal.values, raw)


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 3)])
def test_tiff_16bit(tmp_path, shape):
    raw = random_u16(shape, seed=len(shape))
    tifffile.imwrite(tmp_path / "img.tif", raw, photometric="rgb" if len(shape) == 3 else "minisblack")
    signal = nfields.load_image(tmp_path / "img.tif")
    assert signal.values.shape == (20, 30, shape[2] if len(shape) == 3 else 1)
    assert_16bit_preserved(signal.values.reshape(raw.shape), raw)


def test_tiff_float_and_8bit(tmp_path):
    floats = np.linspace(0, 1, 12 * 10, dtype=np.float32).reshape(12, 10)
    tifffile.imwrite(tmp_path / "f.tiff", floats)
    np.testing.assert_allclose(nfields.load_image(tmp_path / "f.tiff").values[..., 0], floats)
    tifffile.imwrite(tmp_path / "b.tif", (floats * 255).round().astype(np.uint8))
    np.testing.assert_allclose(nfields.load_image(tmp_path / "b.tif").values[..., 0], floats, atol=0.5 / 255 + 1e-6)


def test_nan_tiff_is_refused(tmp_path):
    floats = np.zeros((8, 8), np.float32)
    floats[2, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", floats)
    with pytest.raises(nfields.NfieldsError, match="NaN"):
        nfields.load_image(tmp_path / "nan.tif")


# -- sizes ---------------------------------------------------------------------------------------

def test_size_one_number_is_the_longer_side(tmp_path, image_array):
    Image.fromarray(u8(image_array(32, 48, 1))).save(tmp_path / "wide.png")
    Image.fromarray(u8(image_array(48, 32, 3))).save(tmp_path / "tall.png")
    assert nfields.load_image(tmp_path / "wide.png", size=(16,)).values.shape == (11, 16, 1)
    assert nfields.load_image(tmp_path / "tall.png", size=(16,)).values.shape == (16, 11, 3)
    assert nfields.load_image(tmp_path / "wide.png", size=(96,)).values.shape == (64, 96, 1)  # upscaling
    same = nfields.load_image(tmp_path / "wide.png", size=(48,))
    np.testing.assert_array_equal(same.values, nfields.load_image(tmp_path / "wide.png").values)


def test_size_two_numbers_are_exact(tmp_path, image_array):
    Image.fromarray(u8(image_array(32, 48, 3))).save(tmp_path / "wide.png")
    signal = nfields.load_image(tmp_path / "wide.png", size=(20, 10))
    assert signal.values.shape == (20, 10, 3)
    check_unit_range(signal.values)


def test_resize_keeps_16bit_data_in_float(tmp_path):
    raw = random_u16((40, 40))
    png.from_array(raw, "L;16").save(str(tmp_path / "g16.png"))
    small = nfields.load_image(tmp_path / "g16.png", size=(20,)).values
    assert small.shape == (20, 20, 1)
    check_unit_range(small)
    assert not np.allclose(small * 255, np.round(small * 255), atol=1e-4)  # not squeezed to 8 bits


def test_target_size():
    assert target_size(512, 512, (256,)) == (256, 256)
    assert target_size(300, 451, (100,)) == (67, 100)
    assert target_size(300, 451, (7, 9)) == (7, 9)
    assert target_size(1, 1000, (10,)) == (1, 10)  # never zero
    with pytest.raises(nfields.NfieldsError):
        target_size(10, 10, (0,))
    with pytest.raises(nfields.NfieldsError):
        target_size(10, 10, (5, -1))


# -- built-ins and bad sources --------------------------------------------------------------------

def test_builtin_camera():
    signal = nfields.load_image("camera")
    assert signal.values.shape == (512, 512, 1)
    assert signal.name == "camera"
    check_unit_range(signal.values)
    assert signal.values.std() > 0.1
    assert nfields.load_image("camera", size=(64,)).values.shape == (64, 64, 1)


def test_builtin_rgb():
    assert nfields.load_image("astronaut", size=(32,)).values.shape == (32, 32, 3)


def test_catalog_lists_installed_builtins():
    names = {entry.name for entry in nfields.catalog.entries()}
    assert {"camera", "astronaut", "chelsea"} <= names
    assert nfields.catalog.locate("camera").exists()


def test_bad_sources(tmp_path):
    with pytest.raises(nfields.NfieldsError, match="did you mean 'camera'"):
        nfields.load_image("camra")
    with pytest.raises(nfields.NfieldsError, match="does not exist"):
        nfields.load_image(tmp_path / "missing.png")
    with pytest.raises(nfields.NfieldsError, match="is a folder"):
        nfields.load_image(tmp_path)
    (tmp_path / "notes.png").write_text("not an image\n")
    with pytest.raises(nfields.NfieldsError, match="not an image"):
        nfields.load_image(tmp_path / "notes.png")
    (tmp_path / "notes.tif").write_text("not an image\n")
    with pytest.raises(nfields.NfieldsError, match="TIFF"):
        nfields.load_image(tmp_path / "notes.tif")


@pytest.mark.parametrize("kind", ["gray8", "rgb16"])
def test_truncated_png(tmp_path, image_array, kind):
    path = tmp_path / "whole.png"
    if kind == "gray8":
        Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(path)
    else:
        png.from_array(random_u16((64, 64 * 3)), "RGB;16").save(str(path))
    data = path.read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(nfields.NfieldsError, match="truncated or damaged"):
        nfields.load_image(tmp_path / "half.png")


def test_image_too_large_for_memory(tmp_path, image_array, monkeypatch):
    Image.fromarray(u8(image_array(32, 32, 3))).save(tmp_path / "img.png")
    monkeypatch.setattr("nfields.data.image.available_memory", lambda: 1000)
    with pytest.raises(nfields.NfieldsError, match="too large to hold in memory"):
        nfields.load_image(tmp_path / "img.png")


# -- coordinate grids ----------------------------------------------------------------------------

def test_centers_convention():
    for n in (1, 4, 7):
        expected = torch.tensor([(2 * i + 1) / n - 1 for i in range(n)])
        torch.testing.assert_close(axis(n, "centers"), expected)
    # Pixel edges span [-1, 1] exactly; the grid is symmetric about 0.
    c = axis(6, "centers")
    torch.testing.assert_close(c, -c.flip(0))


def test_endpoints_convention():
    for n in (2, 5, 8):
        torch.testing.assert_close(axis(n, "endpoints"), torch.linspace(-1, 1, n))


@pytest.mark.parametrize("convention", ["centers", "endpoints"])
def test_pixel_grid_is_y_then_x_row_major(convention):
    grid = pixel_grid(3, 5, convention)
    assert grid.shape == (3, 5, 2)
    torch.testing.assert_close(grid[:, 0, 0], axis(3, convention))  # y varies down the rows
    torch.testing.assert_close(grid[0, :, 1], axis(5, convention))  # x along the columns
    signal = nfields.ImageSignal(np.arange(15, dtype=np.float32).reshape(3, 5, 1) / 15, "ramp")
    coords, targets = signal.coords(convention), signal.targets()
    assert coords.shape == (15, 2) and targets.shape == (15, 1)
    torch.testing.assert_close(coords[7], grid[1, 2])  # pixel (row 1, col 2)
    assert targets[7, 0] == pytest.approx(7 / 15)


@pytest.mark.parametrize("convention", ["centers", "endpoints"])
def test_region_axis_of_whole_image_is_the_pixel_axis(convention):
    torch.testing.assert_close(region_axis(0, 10, 10, 10, convention), axis(10, convention))
    # Twice the samples over the first half: the left half of a 2x super-resolution grid.
    torch.testing.assert_close(region_axis(0, 5, 10, 10, convention), region_axis(0, 10, 20, 10, convention)[:10])


# -- metrics -------------------------------------------------------------------------------------

def test_psnr_identical_is_huge():
    x = torch.rand(16, 16, 3)
    assert psnr(x, x) > 150


def test_psnr_known_mse():
    target = torch.full((8, 8, 1), 0.5)
    assert psnr(target + 0.1, target) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    signs = torch.ones(8, 8, 1)
    signs[::2] = -1
    assert psnr(target + 0.01 * signs, target) == pytest.approx(40.0, abs=1e-3)  # MSE 1e-4
    assert float(mse_to_psnr(torch.tensor(1e-3))) == pytest.approx(30.0)


def test_psnr_clamps_the_prediction():
    target = torch.ones(4, 4, 1)
    assert psnr(target + 0.5, target) > 150  # clamped to 1: perfect
    assert psnr(target + 0.5, target, clamp=False) == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-4)


@pytest.fixture
def ssim_pairs(image_array):
    rng = np.random.default_rng(0)
    pairs = []
    for channels in (1, 3):
        clean = image_array(48, 40, channels).astype(np.float64)
        for noise in (0.02, 0.1, 0.3):
            noisy = np.clip(clean + rng.normal(0, noise, clean.shape), 0, 1)
            pairs.append((noisy, clean))
        pairs.append((np.clip(clean * 0.7 + 0.2, 0, 1), clean))  # contrast/brightness change
    pairs.append((rng.random((32, 32, 1)), rng.random((32, 32, 1))))  # unrelated
    return pairs


def test_ssim_matches_skimage(ssim_pairs):
    for prediction, target in ssim_pairs:
        ours = ssim(torch.from_numpy(prediction), torch.from_numpy(target))
        reference = structural_similarity(prediction, target, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0, channel_axis=-1)
        assert ours == pytest.approx(reference, abs=1e-4), (ours, reference)


def test_ssim_identical_and_tiny_images():
    x = torch.rand(20, 20, 3)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    y = torch.rand(20, 20, 3)
    assert ssim(y, x) < 0.5
    small = torch.rand(6, 9, 1)  # smaller than the 11x11 window
    assert ssim(small, small) == pytest.approx(1.0, abs=1e-5)
