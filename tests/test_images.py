"""Decoding every format and oddity to upright RGB uint8, and the resize/crop/views rule."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnnfeat.exceptions import ConfigError, ImageDecodeError, ImageTooLargeError
from cnnfeat.images import ImageTransform, decode_image, map_ordered, read_image_file


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(w: int = 40, h: int = 30) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None, :]
    a[..., 1] = 200
    a[: h // 2, : w // 2, 2] = 255  # a blue top-left block shows orientation
    return Image.fromarray(a)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "JPEG"])
def test_formats_decode_to_rgb(fmt: str) -> None:
    kw = {"lossless": True} if fmt == "WEBP" else ({"quality": 95} if fmt == "JPEG" else {})
    out = decode_image(_encode(_rgb(), fmt, **kw))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    tol = 12 if fmt == "JPEG" else 0
    assert abs(int(out[2, 2, 2]) - 255) <= tol and int(out[-2, -2, 2]) <= tol  # blue block top-left


def test_grayscale_becomes_three_equal_channels() -> None:
    out = decode_image(_encode(Image.new("L", (9, 7), 77), "JPEG"))
    assert out.shape == (7, 9, 3)
    assert (out[..., 0] == out[..., 1]).all() and abs(int(out[0, 0, 0]) - 77) <= 2


def test_png_alpha_composites_on_white() -> None:
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    im.putpixel((0, 0), (255, 0, 0, 255))
    out = decode_image(_encode(im, "PNG"))
    assert tuple(out[3, 3]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (255, 0, 0)


def test_sixteen_bit_png_scales_to_eight_bits() -> None:
    a = np.full((5, 6), 65535, np.uint16)
    a[0, 0] = 0
    a[1, 1] = 32896  # 128 * 257
    out = decode_image(_encode(Image.fromarray(a), "PNG"))
    assert out.dtype == np.uint8
    assert out[2, 2, 0] == 255 and out[0, 0, 0] == 0 and out[1, 1, 0] == 128


def test_palette_and_animated_gif_first_frame() -> None:
    red, green = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 255, 0))
    data = _encode(red.convert("P"), "GIF", save_all=True, append_images=[green.convert("P")])
    out = decode_image(data)
    assert tuple(out[4, 4]) == (255, 0, 0)


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_encode(cmyk, "JPEG", quality=95))
    r, g, b = (int(v) for v in out[8, 8])
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied() -> None:
    im = _rgb(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(_encode(im, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == (40, 30, 3)  # upright: width and height swapped
    assert out[2, -3, 2] > 200  # the blue block moved to the top-right


def test_one_pixel_image() -> None:
    assert decode_image(_encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")).shape == (1, 1, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\x00\x01garbage" * 50, "not a recognised image format"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"),
    ],
)
def test_non_images_give_clear_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason) as info:
        decode_image(data, "photos/x.jpg")
    assert info.value.path == "photos/x.jpg"


def test_truncated_jpeg_is_an_error() -> None:
    data = _encode(_rgb(200, 150), "JPEG", quality=90)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2], "cut.jpg")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding() -> None:
    bomb = _png_header_only(30000, 30000)  # 900 M pixels declared in a 60-byte file
    with pytest.raises(ImageTooLargeError, match="limit") as info:
        decode_image(bomb, "bomb.png")
    assert info.value.path == "bomb.png"
    moderate = _png_header_only(5000, 4000)  # under Pillow's ceiling: our configurable limit decides
    with pytest.raises(ImageTooLargeError, match="5000x4000 = 20,000,000 pixels"):
        decode_image(moderate, "big.png", max_pixels=10_000_000)


def test_read_image_file_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="file not found"):
        read_image_file(tmp_path / "missing.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageDecodeError, match="is a directory"):
        read_image_file(tmp_path / "dir.jpg")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageDecodeError, match="broken symbolic link"):
        read_image_file(tmp_path / "link.jpg")
    data, key = read_image_file(_write(tmp_path / "ünï cödé.png", _encode(_rgb(), "PNG")))
    assert len(key) == 64 and data.startswith(b"\x89PNG")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_transform_crop_and_views() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 100:] = 255  # right half white
    t = ImageTransform(size=32, crop_pct=0.5, views="center")
    out = t(img)
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.uint8
    # shorter side -> 64, width -> 128; the centre 32 straddles the black/white edge
    assert out[0, :, 0].mean() < 20 and out[0, :, -1].mean() > 235

    flip = ImageTransform(size=32, crop_pct=0.5, views="center+flip")(img)
    np.testing.assert_array_equal(flip[1], flip[0][:, ::-1])

    ten = ImageTransform(size=32, crop_pct=0.5, views="10crop")(img)
    assert ten.shape == (10, 32, 32, 3)
    assert ten[1].max() < 10 and ten[2].min() > 245  # top-left corner black, top-right white
    np.testing.assert_array_equal(ten[5], ten[0][:, ::-1])


def test_warp_keeps_everything() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :10] = 255  # a white stripe at the far left survives warping, not cropping
    warped = ImageTransform(size=20, resize="warp")(img)[0]
    cropped = ImageTransform(size=20, crop_pct=1.0)(img)[0]
    assert warped[:, 0].mean() > 200 and cropped[:, 0].mean() < 10


def test_transform_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="views"):
        ImageTransform(size=10, views="5crop")
    with pytest.raises(ConfigError, match="crop_pct"):
        ImageTransform(size=10, crop_pct=1.5)


def test_large_jpeg_reduced_decode_matches_full_decode() -> None:
    """DCT-domain reduction is a speed-up, not a different picture."""
    rng = np.random.default_rng(0)
    smooth = np.clip(rng.normal(128, 40, (40, 60, 3)), 0, 255).astype(np.uint8)
    big = Image.fromarray(smooth).resize((1200, 800), Image.BICUBIC)
    data = _encode(big, "JPEG", quality=95)
    t = ImageTransform(size=64, crop_pct=1.0)
    fast = t(decode_image(data, min_side=t.resize_to)).astype(int)
    full = t(decode_image(data)).astype(int)
    assert np.abs(fast - full).mean() < 3


def test_map_ordered_keeps_order_and_returns_errors() -> None:
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i * i

    results = list(map_ordered(work, range(8), workers=3, max_ahead=2))
    assert [r[0] for r in results] == list(range(8))
    assert results[2][1] == 4 and isinstance(results[3][2], ValueError)


def test_map_ordered_closed_from_one_of_its_own_threads() -> None:
    # an abandoned generator may be finalised by the garbage collector in a decode thread
    started, outcome = threading.Event(), []
    holder: dict[str, Any] = {}

    def work(i: int) -> int:
        if i == 5:
            started.wait(5)
            try:
                holder["results"].close()
                outcome.append("closed")
            except BaseException as exc:  # before the fix: RuntimeError("cannot join current thread")
                outcome.append(repr(exc))
        return i

    holder["results"] = results = map_ordered(work, range(100), workers=2, max_ahead=8)
    assert next(results)[1] == 0
    started.set()
    deadline = time.monotonic() + 10
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outcome == ["closed"]
    assert next(results, None) is None
