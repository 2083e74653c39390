"""The tests' support module (not shipped): inputs made on the fly and the trials the tests and benchmarks share.

:func:`make_bad_input_corpus` writes one file (or link, or folder) per kind of
trouble into a folder and returns, for each, the outcome cnnfeat promises:
decoded correctly, or refused with a reason naming the path. Also: photo-like
JPEGs, unsafe archives and pickles, SIGKILL trials of the store's writer,
bit-flip trials of a finished store, and the tiny-network extractor.
``benchmarks/`` imports it too (with the repository root on ``sys.path``).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CorpusCase",
    "FlipTrial",
    "KillTrial",
    "bit_flip_trials",
    "kill_and_resume_trial",
    "make_bad_input_corpus",
    "make_image",
    "make_photos",
    "make_unsafe_archives",
    "make_unsafe_pickles",
    "peak_rss_mb",
    "png_declaring",
    "ray_actor_pids",
    "store_chunks",
    "tiny",
]


def make_photos(folder: str | os.PathLike[str], n: int, *, size: tuple[int, int] | None = (640, 480), seed: int = 0) -> list[str]:
    """Write ``n`` distinct photo-like JPEGs (smooth colour fields, as photos compress); return their paths.

    ``size=None`` draws each width and height from 300-800 px.
    """
    from PIL import Image

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = size or (int(v) for v in rng.integers(300, 800, 2))
        coarse = rng.integers(0, 255, (max(2, h // 32), max(2, w // 32), 3)).astype(np.uint8)
        path = root / f"photo_{i:05d}.jpg"
        Image.fromarray(coarse).resize((w, h), Image.BILINEAR).save(path, quality=88)
        paths.append(str(path))
    return paths


def peak_rss_mb(command: list[str]) -> float:
    """Run ``command`` and return the peak resident memory of that process, in MiB (POSIX)."""
    import subprocess

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
    return usage.ru_maxrss / 1024 if os.uname().sysname != "Darwin" else usage.ru_maxrss / 2**20


@dataclass(frozen=True)
class CorpusCase:
    """One corpus entry: ``expected`` is ``"decoded"`` or ``"error"``; ``reason`` a substring of the error."""

    kind: str
    path: str
    expected: str
    reason: str = ""
    shape: tuple[int, int] | None = None  # (height, width) after decoding, when it says something


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _photo(w: int = 64, h: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None, :].astype(np.uint8)
    a[..., 1] = rng.integers(0, 255)
    a[: h // 2, : w // 2, 2] = 255
    return a


def _save(image: object, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)  # type: ignore[attr-defined]
    return buf.getvalue()


def make_bad_input_corpus(folder: str | os.PathLike[str]) -> list[CorpusCase]:
    """Write the corpus into ``folder`` and return its cases, in a fixed order."""
    from PIL import Image

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[CorpusCase] = []

    def add(kind: str, name: str, data: bytes | None, expected: str, reason: str = "", shape=None) -> Path:
        path = root / name
        if data is not None:
            path.write_bytes(data)
        cases.append(CorpusCase(kind, str(path), expected, reason, shape))
        return path

    rgb = Image.fromarray(_photo())

    def jpeg(seed: int) -> bytes:
        return _save(Image.fromarray(_photo(seed=seed)), "JPEG", quality=92)

    add("zero-byte file", "zero.jpg", b"", "error", "empty file")
    add("truncated JPEG", "truncated.jpg", _save(Image.fromarray(_photo(400, 300)), "JPEG")[:3000], "error", "truncated")
    add("random bytes named .jpg", "random.jpg", np.random.default_rng(1).bytes(5000), "error", "not a recognised image")
    html = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>"
    add("HTML error page named .jpg", "error_page.jpg", html, "error", "HTML")
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    add("PNG with alpha", "alpha.png", _save(rgba, "PNG"), "decoded", shape=(10, 20))
    add("16-bit PNG", "deep.png", _save(Image.fromarray(np.full((12, 16), 40000, np.uint16)), "PNG"), "decoded", shape=(12, 16))
    add("palette GIF", "palette.gif", _save(rgb.convert("P"), "GIF"), "decoded", shape=(48, 64))
    frames = [Image.new("RGB", (30, 20), c).convert("P") for c in ((255, 0, 0), (0, 255, 0))]
    add(
        "animated GIF",
        "animated.gif",
        _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "decoded",
        shape=(20, 30),
    )
    add("CMYK JPEG", "cmyk.jpg", _save(Image.new("CMYK", (24, 18), (0, 255, 255, 0)), "JPEG"), "decoded", shape=(18, 24))
    add("grayscale JPEG", "gray.jpg", _save(Image.new("L", (33, 21), 90), "JPEG"), "decoded", shape=(21, 33))
    add("1x1 image", "one_pixel.png", _save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "decoded", shape=(1, 1))
    add("decompression bomb (30000x30000 declared)", "bomb.png", png_declaring(30000, 30000), "error", "pixels")
    exif = Image.Exif()
    exif[0x0112] = 6
    add("EXIF-rotated JPEG", "rotated.jpg", _save(rgb, "JPEG", exif=exif.tobytes()), "decoded", shape=(64, 48))
    add("TIFF", "photo.tiff", _save(rgb, "TIFF"), "decoded", shape=(48, 64))
    add("WebP", "photo.webp", _save(rgb, "WEBP"), "decoded", shape=(48, 64))
    add("BMP", "photo.bmp", _save(rgb, "BMP"), "decoded", shape=(48, 64))
    locked = root / "no_permission.jpg"
    locked.write_bytes(jpeg(1))
    locked.chmod(0)
    if os.name != "nt" and os.geteuid() == 0:  # root reads any file: the permission bits cannot bite
        cases.append(CorpusCase("file without read permission (running as root: readable)", str(locked), "decoded"))
    else:
        cases.append(CorpusCase("file without read permission", str(locked), "error", "permission denied"))
    link = root / "broken_link.jpg"
    link.symlink_to(root / "does_not_exist.jpg")
    cases.append(CorpusCase("broken symbolic link", str(link), "error", "broken symbolic link"))
    (root / "folder.jpg").mkdir()
    cases.append(CorpusCase("directory named x.jpg", str(root / "folder.jpg"), "error", "is a directory"))
    add("non-ASCII file name", "ünïcødé 画像.jpg", jpeg(2), "decoded", shape=(48, 64))
    add("file name with spaces", "with  spaces .jpg", jpeg(3), "decoded", shape=(48, 64))
    add("duplicate image (same bytes, first path)", "duplicate_a.jpg", jpeg(4), "decoded")
    add("duplicate image (same bytes, second path)", "duplicate_b.jpg", jpeg(4), "decoded")
    return cases


# ---------------------------------------------------------------------------- untrusted files


class _Exploit:
    """Pickles into a call of ``os.system``: what a malicious weights file would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def make_unsafe_pickles(folder: str | os.PathLike[str], marker: str | os.PathLike[str]) -> dict[str, Path]:
    """Weight files that would run ``touch marker`` if unpickled naively: legacy, header and zip layouts."""
    import pickle
    import zipfile

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    exploit = _Exploit(Path(marker))
    header = pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2) + pickle.dumps({"little_endian": True}, 2)
    files = {
        "os.system in a legacy state dict": (root / "legacy.pth", header + pickle.dumps({"w": exploit}, 2)),
        "os.system in the file header": (root / "header.pth", pickle.dumps(exploit, 2)),
        "import of a non-allow-listed module": (root / "import.pth", header + pickle.dumps({"w": Path("/")}, 2)),
    }
    for path, data in files.values():
        path.write_bytes(data)
    zipped = root / "zipped.pt"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": exploit}, 2))
    out = {name: path for name, (path, _) in files.items()}
    out["os.system in a zip checkpoint"] = zipped
    return out


def make_unsafe_archives(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Zip and tar archives that try to write outside their target (zip-slip, tar-slip, links, devices)."""
    import tarfile
    import zipfile

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)

    def zip_(name: str, members: dict[str, bytes], symlink: tuple[str, str] | None = None) -> Path:
        with zipfile.ZipFile(root / name, "w") as z:
            for member, data in members.items():
                z.writestr(member, data)
            if symlink:
                info = zipfile.ZipInfo(symlink[0])
                info.external_attr = 0o120777 << 16  # a symbolic-link entry
                z.writestr(info, symlink[1])
        return root / name

    def tar_(name: str, data: dict[str, bytes] | None = None, link: tuple[str, str, bytes] | None = None) -> Path:
        with tarfile.open(root / name, "w") as t:
            for member, content in (data or {}).items():
                info = tarfile.TarInfo(member)
                info.size = len(content)
                t.addfile(info, io.BytesIO(content))
            if link:
                info = tarfile.TarInfo(link[0])
                info.linkname, info.type = link[1], link[2]
                t.addfile(info)
        return root / name

    return {
        "zip absolute path": zip_("a.zip", {"/tmp/cnnfeat_pwned": b"x"}),
        "zip dot-dot": zip_("b.zip", {"ok/../../pwned.txt": b"x"}),
        "zip symlink": zip_("c.zip", {"x.txt": b"x"}, symlink=("link", "/etc/passwd")),
        "tar absolute path": tar_("d.tar", {"/tmp/cnnfeat_pwned": b"x"}),
        "tar dot-dot": tar_("e.tar", {"../pwned.txt": b"x"}),
        "tar symlink escaping": tar_("f.tar", link=("images/evil", "../../../etc/passwd", tarfile.SYMTYPE)),
        "tar absolute symlink": tar_("g.tar", link=("evil", "/etc/passwd", tarfile.SYMTYPE)),
        "tar hard link escaping": tar_("h.tar", link=("evil", "../outside", tarfile.LNKTYPE)),
        "tar device file": tar_("i.tar", link=("dev", "", tarfile.CHRTYPE)),
    }


# ---------------------------------------------------------------------------- crash trials

_WRITER = """
import os, signal, sys
import numpy as np
from cnnfeat.store import FeatureStore
if os.environ.get("CNNFEAT_TRIAL_DIE_IN_MERGE"):  # die right after the first feature write of a merge
    import h5py
    write = h5py.Dataset.__setitem__
    def write_then_die(self, *args, **kwargs):
        write(self, *args, **kwargs)
        if self.name.startswith("/features"):
            os.kill(os.getpid(), signal.SIGKILL)
    h5py.Dataset.__setitem__ = write_then_die
path, n = sys.argv[1], int(sys.argv[2])
config = {"extractor": "kill-trial", "taps": ["a"], "feature_code_version": %d}
with FeatureStore(path, config, dims={"a": 3}, durable=False) as store:
    for i in range(n):
        key = f"{i:064x}"
        if key not in store:
            store.append([key], {"a": np.full((1, 3), i, np.float32)}, [f"p{i}"])
            print(i, flush=True)
"""


@dataclass(frozen=True)
class KillTrial:
    """Result of killing a store writer and resuming it."""

    committed_before_kill: int
    lost: int
    duplicated: int
    recomputed: int
    wrong_values: int
    killed_during_merge: bool


def kill_and_resume_trial(
    folder: str | os.PathLike[str], seed: int, n_rows: int = 6000, max_delay: float = 1.0, in_merge: bool = False
) -> KillTrial:
    """SIGKILL a process appending ``n_rows`` rows, resume it, and audit the store.

    The kill comes at a random moment (the writer merges its journal into the HDF5
    file after 4096 rows, so some kills land during that write), or, with
    ``in_merge``, from the writer itself right after its first write of feature
    rows into the new HDF5 file.
    """
    import random
    import signal
    import subprocess
    import sys
    import time

    import h5py

    from cnnfeat.store import FEATURE_CODE_VERSION

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    script = root / "writer.py"
    script.write_text(_WRITER % FEATURE_CODE_VERSION)
    path = root / f"trial{seed}.h5"
    cmd = [sys.executable, str(script), str(path), str(n_rows)]
    env = dict(os.environ, CNNFEAT_TRIAL_DIE_IN_MERGE="1") if in_merge else None
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    first = child.stdout.readline() if child.stdout else ""
    if not in_merge:
        time.sleep(random.Random(seed).uniform(0.0, max_delay))
        child.send_signal(signal.SIGKILL)
    child.wait()
    printed = [first, *(child.stdout.read().split() if child.stdout else [])]
    committed = {int(x) for x in printed if str(x).strip()}
    during_merge = any(root.glob(f".{path.name}.*.tmp"))
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    recomputed = {int(x) for x in resumed.stdout.split()}
    with h5py.File(path) as f:
        n = int(f.attrs["n_rows"])
        keys = [int(k, 16) for k in f["keys"][:n]]
        values = f["features/a"][:n, 0]
    return KillTrial(
        committed_before_kill=len(committed),
        lost=len(set(range(n_rows)) - set(keys)),
        duplicated=len(keys) - len(set(keys)),
        recomputed=len(recomputed & committed),
        wrong_values=int((values != np.asarray(keys, np.float32)).sum()),
        killed_during_merge=during_merge,
    )


# ---------------------------------------------------------------------------- bit flips at rest


def store_chunks(path: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """``(dataset, byte offset, size)`` of every stored chunk of every chunked dataset of an HDF5 file."""
    import h5py

    found: list[tuple[str, int, int]] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and obj.chunks:
            for i in range(obj.id.get_num_chunks()):
                info = obj.id.get_chunk_info(i)
                found.append((name, int(info.byte_offset), int(info.size)))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


@dataclass
class FlipTrial:
    """One bit flipped in a finished store, and what every read path then did."""

    where: str  # the dataset whose chunk holds the bit, or "outside the chunks"
    offset: int
    bit: int
    changed_value: bool  # the flipped dataset no longer reads back as the clean one (or not at all)
    detected: bool  # check_store or a read path reported it
    served_wrong: bool  # a read path returned a value that differs from the clean store's
    healed_identical: bool | None  # after healing: features bit-identical to the clean ones (None: not healable)
    outcome: str


def bit_flip_trials(
    store: str | os.PathLike[str], sources: list[str], make_extractor: Any, *, trials: int, inside: bool = True, seed: int = 0
) -> list[FlipTrial]:
    """Flip one random bit per trial in a finished store and try every read path on it.

    ``make_extractor(heal=...)`` returns the extractor that wrote ``store`` (caching into it).
    ``inside=True`` flips bits inside stored chunks (the data, and their checksums);
    ``inside=False`` anywhere else in the file (HDF5's metadata, headers, free space).
    Each trial starts again from the clean file. Read paths tried: :func:`check_store`,
    a cached extraction without healing, :func:`cnnfeat.export.feature_table`, and an
    extraction with healing, compared bit for bit with the clean features.
    """
    import shutil

    from cnnfeat.exceptions import CnnfeatError, StoreCorruptError
    from cnnfeat.export import feature_table
    from cnnfeat.store import check_store

    store = Path(store)
    clean_copy = store.with_name(store.name + ".clean")
    shutil.copyfile(store, clean_copy)
    clean, _ = make_extractor(heal=False).extract(sources)
    chunks = store_chunks(store)
    size = store.stat().st_size
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(trials):
        shutil.copyfile(clean_copy, store)
        if inside:
            where, start, length = chunks[int(rng.integers(len(chunks)))]
            offset = start + int(rng.integers(length))
        else:
            inside_chunks = [(a, a + n) for _, a, n in chunks]
            while True:
                offset = int(rng.integers(size))
                if not any(a <= offset < b for a, b in inside_chunks):
                    break
            where = "outside the chunks"
        bit = int(rng.integers(8))
        with open(store, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ (1 << bit)]))
        changed = _reads_differently(store, clean_copy, where) if inside else False
        detected, served_wrong, notes = False, False, []
        try:
            damage = check_store(store)
            detected = bool(damage)
            notes.append(f"check: {', '.join(damage) or 'intact'}")
        except CnnfeatError as exc:
            detected = True
            notes.append(f"check: {type(exc).__name__}")
        for name, read in (("extract", lambda: make_extractor(heal=False).extract(sources)[0]),
                           ("export", lambda: feature_table(store)[1])):  # fmt: skip
            try:
                got = read()
                same = all(np.array_equal(got[t], clean[t][: len(got[t])]) for t in got) if name == "extract" else None
                if name == "export":
                    with_keys = feature_table(clean_copy)[1]
                    same = all(np.array_equal(got[t], with_keys[t]) for t in got)
                served_wrong = served_wrong or not same
                notes.append(f"{name}: {'same values' if same else 'DIFFERENT VALUES'}")
            except CnnfeatError as exc:
                detected = True
                notes.append(f"{name}: {type(exc).__name__}")
        try:
            healed, _ = make_extractor(heal=True).extract(sources)
            healed_identical: bool | None = all(np.array_equal(healed[t], clean[t]) for t in clean)
            notes.append(f"healed: {'identical' if healed_identical else 'DIFFERENT'}")
        except StoreCorruptError:
            healed_identical = False
            notes.append("healed: still damaged")
        except CnnfeatError as exc:  # a file that no longer opens: reported, not healable in place
            healed_identical = None
            notes.append(f"healed: not possible ({type(exc).__name__})")
        results.append(FlipTrial(where, offset, bit, changed, detected, served_wrong, healed_identical, "; ".join(notes)))
    shutil.copyfile(clean_copy, store)
    clean_copy.unlink()
    return results


def _reads_differently(path: Path, clean: Path, dataset: str) -> bool:
    """Whether ``dataset`` of ``path`` fails to read or reads other values than in ``clean`` (its valid rows)."""
    import h5py

    with h5py.File(clean, "r") as f:
        n = int(f.attrs["n_rows"]) if not dataset.startswith("index/") else len(f[dataset])
        expected = f[dataset][:n]
    try:
        with h5py.File(path, "r") as f:
            found = f[dataset][:n]
    except (OSError, ValueError, KeyError):
        return True
    return not np.array_equal(found, expected)


# ---------------------------------------------------------------------------- small helpers of the tests


def translated_domains(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, labels and a source mask: three classes; the target is the source moved by a large random offset.

    Source-only classifiers fail on the target; self-labelling adaptation (SPL) recovers it.
    """
    rng = np.random.default_rng(seed)
    d, n = 10, 300
    y = rng.integers(0, 3, 2 * n)
    centres = rng.normal(0, 3, (3, d))
    X = centres[y] + rng.normal(0, 1, (2 * n, d))
    X[n:] += rng.normal(0, 5, d)
    return X, y, np.arange(2 * n) < n


def make_image(path: Path, seed: int, size: tuple[int, int] = (48, 40), fmt: str | None = None) -> Path:
    """Write a random-but-smooth RGB image (a colour gradient plus noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 255, 3)
    gx = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, 3)
    gy = np.linspace(0, 1, h)[:, None, None] * rng.integers(-120, 120, 3)
    pixels = np.clip(base + gx + gy + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def ray_actor_pids(title: bytes = b"_ExtractionWorker") -> list[int]:
    """Process ids of this machine's Ray actors of a class (Ray names an actor's process after it), via /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if title in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return sorted(pids)


def tiny(**params: object) -> object:
    """A CNNFeatures on the registered tiny test backbone (random seeded weights)."""
    from cnnfeat import CNNFeatures

    defaults: dict[str, object] = {"backbone": "tiny_test", "weights": None, "batch_size": 4}
    defaults.update(params)
    return CNNFeatures(**defaults)


_CONCURRENT_WRITER = """
import json, sys, time
import numpy as np
from cnnfeat.exceptions import StoreLockedError
from cnnfeat.store import FeatureStore
path, config, me, appends = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
done, refused, errors = [], 0, []
for i in range(appends):
    keys = [f"{me:03d}{i:05d}{j:02d}".rjust(64, "0") for j in range(5)]
    while True:
        try:
            with FeatureStore(path, config, dims={"a": 3}) as store:
                store.append(keys, {"a": np.ones((5, 3))}, keys)
            done += keys
            break
        except StoreLockedError:
            refused += 1
            time.sleep(0.001)
        except Exception as exc:
            errors.append(repr(exc))
            break
print(json.dumps({"done": done, "refused": refused, "errors": errors}))
"""


def concurrent_writers_trial(path: Path, writers: int, appends: int) -> dict[str, Any]:
    """``writers`` processes each open ``path``, append 5 rows and close, ``appends`` times, all at once.

    Returns the rows whose append returned (``committed``), those the store holds at the end
    (``found``), how often a writer was refused the lock (``refused``) and any other error.
    """
    from cnnfeat.store import FEATURE_CODE_VERSION, FeatureStore

    config = {"extractor": "writers", "taps": ["a"], "feature_code_version": FEATURE_CODE_VERSION}
    if not path.exists():
        FeatureStore(path, config, dims={"a": 3}).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_WRITER, str(path), json.dumps(config), str(n), str(appends)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"writer failed: {err[-2000:]}")
        results.append(json.loads(out))
    with FeatureStore(path, mode="r") as store:
        found = set(store.keys())
    committed = [key for r in results for key in r["done"]]
    return {
        "committed": committed,
        "found": found,
        "refused": sum(r["refused"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
    }
