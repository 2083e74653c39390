"""Image files to network-ready pixels: decode, orient, resize, crop, views, and a parallel loader.

Decoding reads the header first (Pillow, lazily) so that the declared size is
checked against a pixel limit before any pixel memory is allocated. JPEGs are
decoded by OpenCV, which applies EXIF orientation, handles CMYK, and can
decode at 1/2, 1/4 or 1/8 scale in the DCT domain when the image is much
larger than needed (faster than a full decode; see benchmarks/README.md);
everything else (PNG, GIF first frame, BMP, TIFF, WebP; palette, alpha,
16-bit) goes through Pillow. The result is always RGB uint8.

OpenCV and Pillow release the GIL while decoding and resizing, so a thread
pool (:func:`map_ordered`) runs decoding in parallel with the network.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from cnnfeat.exceptions import ConfigError, ImageDecodeError, ImageTooLargeError
from cnnfeat.hints import JSONObject

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "DECODE_BUDGET",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "INTERPOLATIONS",
    "RESIZE_MODES",
    "VIEWS",
    "ImageTransform",
    "PixelBudget",
    "declared_pixels",
    "decode_image",
    "map_ordered",
    "read_image_file",
]

#: test-time views: one centre crop; centre and its mirror; Razavian-style 10 crops
VIEWS = {"center": 1, "center+flip": 2, "10crop": 10}
#: refuse images declaring more pixels than this (about 16k x 11k); configurable
DEFAULT_MAX_PIXELS = 178_956_970
#: refuse image files larger than this (256 MiB): no read is sized by what a path turns out to be
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: ``resize="crop"`` keeps at most this many short sides of an image's long side (its centre) before resizing, so an
#: extreme aspect ratio (a 40000x1 strip) cannot ask for an enormous resized image; ordinary photos are untouched
MAX_ASPECT = 16
INTERPOLATIONS = {"bilinear": 1, "bicubic": 2, "area": 3}  # cv2.INTER_LINEAR, INTER_CUBIC, INTER_AREA
#: keep the aspect ratio and crop the centre, or stretch to the square (DeCAF)
RESIZE_MODES = ("crop", "warp")
_T = TypeVar("_T")
_R = TypeVar("_R")


def _cv2() -> ModuleType:
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the thread pool, not from inside OpenCV
    return cv2


def read_image_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, str]:
    """Read a file's bytes and their sha256 hex digest (the feature cache key).

    Only a regular file is read (a link to one is followed), and only up to ``max_bytes``:
    a device (``/dev/zero``), a FIFO or a socket is refused without blocking, before any read.

    Raises :class:`ImageDecodeError` naming the path for a missing file, a broken
    link, a directory, a file that is not regular or too large, or a permission problem.
    """
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))  # a FIFO must not block
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError
            if not stat.S_ISREG(info.st_mode):
                raise ImageDecodeError(p, "not a regular file (a device, FIFO or socket); only files are read")
            if info.st_size > max_bytes:
                raise ImageDecodeError(p, f"file of {info.st_size:,} bytes is over the limit of {max_bytes:,}")
            data = f.read(max_bytes + 1)
            if len(data) > max_bytes:  # grew while we read it
                raise ImageDecodeError(p, f"file is over the limit of {max_bytes:,} bytes")
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(p) else "file not found"
        raise ImageDecodeError(p, reason) from None
    except IsADirectoryError:
        raise ImageDecodeError(p, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageDecodeError(p, "permission denied (cannot read the file)") from None
    except OSError as exc:
        raise ImageDecodeError(p, f"cannot read: {exc.strerror or exc}") from None
    return data, hashlib.sha256(data).hexdigest()


def _describe_non_image(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in head:
        return "not an image: the file holds an HTML/XML page (a failed download?)"
    if head.startswith((b"{", b"[")):
        return "not an image: the file holds JSON text"
    return f"not a recognised image format (first bytes {data[:8].hex(' ')})"


def decode_image(
    data: bytes,
    path: str = "<bytes>",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int = 0,
) -> np.ndarray:
    """Decode image bytes into an RGB uint8 array of shape (h, w, 3), upright.

    Parameters
    ----------
    data : bytes
        The file's content.
    path : str
        Used in error messages only.
    max_pixels : int or None
        Refuse images whose header declares more pixels (checked before decoding).
    min_side : int
        The caller needs the shorter side to be at least this large; a JPEG much
        larger than that may be decoded at a reduced scale (a pure speed-up).

    Raises
    ------
    ImageDecodeError
        Empty, truncated, corrupt or non-image data.
    ImageTooLargeError
        The declared size exceeds ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
            fmt, mode = header.format, header.mode
    except UnidentifiedImageError:
        raise ImageDecodeError(path, _describe_non_image(data)) from None
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling (2x its MAX_IMAGE_PIXELS)
        raise ImageTooLargeError(path, f"{exc} (over Pillow's limit; refused before decoding)") from None
    except Exception as exc:  # Pillow raises many types for corrupt headers
        raise ImageDecodeError(path, f"corrupt image header ({exc})") from None
    if width < 1 or height < 1:
        raise ImageDecodeError(path, f"image declares an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            path,
            f"declares {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(a decompression-bomb guard; raise max_pixels if the image is genuine)",
        )
    if fmt == "JPEG" and mode in ("RGB", "L", "CMYK") and _looks_complete_jpeg(data):
        rgb = _decode_jpeg_cv2(data, min(width, height), min_side)
        if rgb is not None:
            return rgb
    return _decode_pillow(data, path)


def declared_pixels(data: bytes) -> int:
    """The pixel count an image's header declares (0 where there is no readable header: decoding says why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Exception:
        return 0
    return int(max(0, width) * max(0, height))


class PixelBudget:
    """Pixels that the decoding threads of a process may hold at once; one image is always let through.

    >>> budget = PixelBudget(100)
    >>> with budget.hold(80):
    ...     budget.in_use
    80
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.in_use = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(max(pixels, 0), self.total)
        with self._changed:
            self._changed.wait_for(lambda: self.in_use == 0 or self.in_use + pixels <= self.total)
            self.in_use += pixels
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= pixels
                self._changed.notify_all()


#: decoded pixels held at once by all of a process's decoding threads (the default pixel limit's worth, about
#: 540 MB of RGB), so decode memory does not grow with the number of workers
DECODE_BUDGET = PixelBudget(DEFAULT_MAX_PIXELS)


def _looks_complete_jpeg(data: bytes) -> bool:
    # OpenCV returns a grey-padded image for a truncated JPEG; Pillow raises. Send
    # files without an end-of-image marker to Pillow so truncation is an error.
    return data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"


def _decode_jpeg_cv2(data: bytes, short_side: int, min_side: int) -> np.ndarray | None:
    cv2 = _cv2()
    flag = cv2.IMREAD_COLOR
    if min_side > 0:
        for factor, reduced in (
            (8, cv2.IMREAD_REDUCED_COLOR_8),
            (4, cv2.IMREAD_REDUCED_COLOR_4),
            (2, cv2.IMREAD_REDUCED_COLOR_2),
        ):
            if short_side // factor >= min_side:
                flag = reduced
                break
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if bgr is None or bgr.ndim != 3:
        return None
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@functools.cache
def _pillow_blocks_returned_to_the_os() -> None:
    # Pillow allocates a large image in 16 MB blocks, under glibc's mmap threshold once that has adapted, so they
    # come from the decoding thread's malloc arena and stay there after the image is freed: every decoding thread
    # would keep its largest image's memory. Blocks past the 32 MB threshold ceiling are mapped and unmapped.
    from PIL import Image

    Image.core.set_block_size(64 << 20)


def _decode_pillow(data: bytes, path: str) -> np.ndarray:
    from PIL import Image, ImageOps

    _pillow_blocks_returned_to_the_os()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)  # first frame of an animation
            return _to_rgb(ImageOps.exif_transpose(im))
    except ImageDecodeError:
        raise
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated file ({reason})"
        raise ImageDecodeError(path, f"cannot decode: {reason}") from None


def _to_rgb(im: PILImage) -> np.ndarray:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit / 32-bit grey
        grey = np.asarray(im, dtype=np.float64)
        top = 65535.0 if grey.max(initial=0) > 255 else 255.0
        grey = np.clip(grey / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:  # composite on white, as a viewer shows it
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def to_gray(image: np.ndarray, size: tuple[int, int] | None = None, max_side: int | None = None) -> np.ndarray:
    """uint8 grayscale of an RGB or gray image, resized to ``size`` (w, h) or to at most ``max_side``."""
    cv2 = _cv2()
    gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    h, w = gray.shape
    if size is not None:
        return np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR))
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        return np.asarray(cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA))
    return gray


@dataclass(frozen=True)
class ImageTransform:
    """Resize/crop rule turning an RGB image into ``n_views`` network inputs.

    Parameters
    ----------
    size : int
        Side of the square network input.
    crop_pct : float
        ``resize="crop"``: the shorter side becomes ``round(size / crop_pct)``, then
        the centre ``size`` square is cut (timm's rule). Ignored by ``"warp"``.
    interpolation : {"bilinear", "bicubic", "area"}
    resize : {"crop", "warp"}
        ``"warp"`` stretches the whole image to ``size x size`` (DeCAF).
    views : {"center", "center+flip", "10crop"}
        Test-time views; their features are averaged.
    max_pixels : int or None
        Pixel limit passed to :func:`decode_image`.
    """

    size: int
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    resize: str = "crop"
    views: str = "center"
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"size must be a positive number of pixels; got {self.size}")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1]; got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {sorted(INTERPOLATIONS)}; got {self.interpolation!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be 'crop' or 'warp'; got {self.resize!r}")
        if self.views not in VIEWS:
            raise ConfigError(f"views must be one of {sorted(VIEWS)}; got {self.views!r}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be positive or None; got {self.max_pixels}")

    @property
    def n_views(self) -> int:
        return VIEWS[self.views]

    @property
    def resize_to(self) -> int:
        """The shorter side after resizing (``size`` itself for ``warp``)."""
        return self.size if self.resize == "warp" else round(self.size / self.crop_pct)

    def fingerprint_config(self) -> JSONObject:
        """What changes the pixels: goes into the feature fingerprint (not the pixel limit)."""
        config = asdict(self)
        config.pop("max_pixels")
        config["jpeg_reduced_decode"] = True
        return config

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Map an RGB uint8 image to ``(n_views, size, size, 3)`` uint8."""
        cv2 = _cv2()
        h, w = rgb.shape[:2]
        if self.resize == "crop" and max(h, w) > MAX_ASPECT * min(h, w):  # keep the centre of a long strip
            keep = MAX_ASPECT * min(h, w)
            rgb = rgb[(h - keep) // 2 : (h + keep) // 2] if h > w else rgb[:, (w - keep) // 2 : (w + keep) // 2]
            h, w = rgb.shape[:2]
        size = self.size
        if self.resize == "warp":
            target = (size, size)
        else:
            scale = self.resize_to / min(h, w)
            target = (max(size, round(w * scale)), max(size, round(h * scale)))
        interpolation = INTERPOLATIONS[self.interpolation]
        if (target[0] < w or target[1] < h) and self.interpolation != "area" and min(h, w) > 2 * self.resize_to:
            # large downscales alias with bilinear/bicubic: pre-shrink with area averaging
            half = (max(target[0], w // 2), max(target[1], h // 2))
            rgb = cv2.resize(rgb, half, interpolation=cv2.INTER_AREA)
        resized = cv2.resize(rgb, target, interpolation=interpolation) if target != (w, h) else rgb
        return self._crops(resized)

    def _crops(self, img: np.ndarray) -> np.ndarray:
        s = self.size
        h, w = img.shape[:2]
        top, left = (h - s) // 2, (w - s) // 2
        center = img[top : top + s, left : left + s]
        if self.views == "center":
            crops = [center]
        elif self.views == "center+flip":
            crops = [center, center[:, ::-1]]
        else:
            corners = [img[:s, :s], img[:s, w - s :], img[h - s :, :s], img[h - s :, w - s :]]
            five = [center, *corners]
            crops = five + [c[:, ::-1] for c in five]
        return np.ascontiguousarray(np.stack(crops))

    def load(self, data: bytes, path: str = "<bytes>") -> np.ndarray:
        """Decode bytes and apply the transform: ``(n_views, size, size, 3)`` uint8.

        Decoding threads share one pixel budget (:data:`DECODE_BUDGET`), so large images are
        decoded a few at a time, however many threads there are.
        """
        with DECODE_BUDGET.hold(declared_pixels(data)):
            return self(decode_image(data, path, max_pixels=self.max_pixels, min_side=self.resize_to))

    def apply(self, data: bytes | np.ndarray, path: str = "<bytes>") -> np.ndarray:
        """An input as read (a file's bytes, or an RGB array given in memory) to ``(n_views, size, size, 3)`` uint8."""
        return self(data) if isinstance(data, np.ndarray) else self.load(data, path)


def map_ordered(
    fn: Callable[[_T], _R],
    items: Iterable[_T],
    *,
    workers: int,
    max_ahead: int,
) -> Generator[tuple[_T, _R | None, BaseException | None], None, None]:
    """Apply ``fn`` in a thread pool, yielding ``(item, result, error)`` in input order.

    At most ``max_ahead`` items are in flight, so memory stays bounded however
    many items there are. An exception from ``fn`` is yielded, not raised.
    """
    if workers < 1 or max_ahead < 1:
        raise ConfigError(f"workers and max_ahead must be >= 1; got {workers} and {max_ahead}")
    pending: deque[tuple[_T, Future[_R]]] = deque()
    prefix = "cnnfeat-decode"
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix)
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= max_ahead:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        # an abandoned generator may be finalised by the garbage collector inside one of
        # the pool's own threads, which cannot join itself
        in_pool_thread = threading.current_thread().name.startswith(prefix)
        pool.shutdown(wait=not in_pool_thread, cancel_futures=True)


def _result(submitted: tuple[Any, Future[Any]]) -> tuple[Any, Any, BaseException | None]:
    item, future = submitted
    try:
        return item, future.result(), None
    except Exception as exc:
        return item, None, exc
