"""A seeded mutation fuzzer for every kind of file cnnfeat reads: stores, weight pickles, model files, archives,
CSVs, images.

Valid seed files of each kind are mutated (bit flips, interesting bytes, large integers written
over fields, truncation, duplicated and inserted blocks; images mostly in their headers), and
each mutant is handed to the code that reads that kind, in a child process with an address-space
limit and a per-input alarm. Each input ends in one of:

- ``result``: read (a mutation a format tolerates, e.g. in an image's pixels),
- ``clear error``: refused with a :class:`~cnnfeat.exceptions.CnnfeatError` naming the problem,

or in a failure: ``traceback`` (any other exception), ``crash`` (the process died: a segfault or
an allocation over the limit) or ``hang`` (over the time limit). The harness restarts the child
after the input that killed it, so one crash does not hide the rest.

Used by ``tests/test_fuzz.py`` (a CI-sized run) and ``benchmarks/reliability.py`` (a longer one).
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("store", "weights", "model", "archive", "csv", "image")
FAILURES = ("traceback", "crash", "hang")
INTERESTING = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE)


@dataclass
class FuzzReport:
    """Outcomes by kind, and the inputs that failed (kept on disk for a rerun)."""

    outcomes: dict[str, Counter] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, path, what happened)

    @property
    def n_inputs(self) -> int:
        return sum(sum(c.values()) for c in self.outcomes.values())

    def count(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.outcomes.values())


# --- seeds --------------------------------------------------------------------------------------


def pickle_int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)  # pickle's BININT: any signed 32-bit value, as a crafted file may hold


def torch_checkpoint(values: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """A PyTorch zip checkpoint holding one float tensor ``w`` with whatever offset, size and stride it is given."""
    tuple_of = lambda ns: b"(" + b"".join(pickle_int(n) for n in ns) + b"t"  # noqa: E731
    pickled = (
        b"\x80\x02ccollections\nOrderedDict\n)R(X" + struct.pack("<I", 1) + b"w"
        + b"ctorch._utils\n_rebuild_tensor_v2\n("
        + b"(X" + struct.pack("<I", 7) + b"storage" + b"ctorch\nFloatStorage\n"
        + b"X" + struct.pack("<I", 1) + b"0" + b"X" + struct.pack("<I", 3) + b"cpu" + pickle_int(values.size) + b"tQ"
        + pickle_int(offset) + tuple_of(size) + tuple_of(stride)
        + b"\x89ccollections\nOrderedDict\n)RtRu."
    )  # fmt: skip
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/data/0", values.astype(np.float32).tobytes())
    return buffer.getvalue()


def make_seeds(kind: str, folder: Path) -> list[Path]:
    """Valid files of ``kind`` to mutate (each readable as it is)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "store":
        from cnnfeat.store import FEATURE_CODE_VERSION, FeatureStore

        path = folder / "seed.h5"
        config = {"extractor": "fuzz", "taps": ["a"], "feature_code_version": FEATURE_CODE_VERSION}
        with FeatureStore(path, config, dims={"a": 4}) as store:
            keys = [f"{i:064x}" for i in range(40)]
            store.append(keys, {"a": np.arange(160, dtype=np.float32).reshape(40, 4)}, [f"img/{i}.jpg" for i in range(40)])
            store.set_index([f"img/{i}.jpg" for i in range(40)], keys, label=[str(i % 3) for i in range(40)])
        return [path]
    if kind == "weights":
        path = folder / "seed.pt"
        path.write_bytes(torch_checkpoint(np.arange(12, dtype=np.float32), 0, (3, 4), (4, 1)))
        return [path]
    if kind == "model":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        from cnnfeat.model_file import ModelCard, save_model

        rng = np.random.default_rng(0)
        probe = make_pipeline(LogisticRegression().fit(rng.normal(size=(30, 8)), np.arange(30) % 3))
        card = ModelCard("cnn:tiny_test/pool?weights=none", "l2", ["a", "b", "c"], data_digest="0" * 64)
        return [save_model(folder / "seed.cnnfeat-model", probe, card)]
    if kind == "archive":
        zipped, tarred = folder / "seed.zip", folder / "seed.tar.gz"
        with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for i in range(3):
                z.writestr(f"jpg/image_{i:04d}.jpg", bytes(range(256)) * 4)
        with tarfile.open(tarred, "w:gz") as t:
            for i in range(3):
                info = tarfile.TarInfo(f"jpg/image_{i:04d}.jpg")
                info.size = 1024
                t.addfile(info, io.BytesIO(bytes(range(256)) * 4))
        return [zipped, tarred]
    if kind == "csv":
        path = folder / "seed.csv"
        rows = [f"img/{c}/{i}.jpg,{c},{'train' if i % 2 else 'test'},d{i % 2}" for c in ("cat", "dog") for i in range(4)]
        path.write_text("path,label,split,domain\n" + "\n".join(rows) + "\n")
        return [path]
    if kind == "image":
        from tests.support import make_image

        formats = [("jpg", "JPEG"), ("png", "PNG"), ("gif", "GIF"), ("bmp", "BMP"), ("tif", "TIFF"), ("webp", "WEBP")]
        return [make_image(folder / f"seed.{ext}", seed=i, fmt=fmt) for i, (ext, fmt) in enumerate(formats)]
    raise ValueError(f"unknown kind {kind!r}")


# --- mutation -----------------------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random, *, header_bias: float = 0.0) -> bytes:
    """One to four random edits of ``data``; with ``header_bias``, that share of edits lands in the first 64 bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out = bytearray(rng.randbytes(rng.randint(1, 64)))
            continue
        span = min(len(out), 64) if rng.random() < header_bias else len(out)
        at = rng.randrange(span)
        edit = rng.randrange(7)
        if edit == 0:  # one bit
            out[at] ^= 1 << rng.randrange(8)
        elif edit == 1:  # an interesting byte
            out[at] = rng.choice(INTERESTING)
        elif edit == 2:  # a large or negative integer over a length or count field
            value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 2**31 + rng.randrange(2**31), 0])
            out[at : at + 4] = struct.pack(rng.choice(["<I", ">I"]), value)
        elif edit == 3:  # truncation
            del out[rng.randrange(len(out)) :]
        elif edit == 4:  # a block duplicated
            end = min(len(out), at + rng.randint(1, 512))
            out[at:at] = out[at:end]
        elif edit == 5:  # random bytes inserted
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        else:  # a block overwritten with random bytes
            n = rng.randint(1, 16)
            out[at : at + n] = rng.randbytes(n)
    return bytes(out)


def make_mutants(kind: str, folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` mutants of the kind's seeds, written under ``folder`` (deterministic for a given ``seed``)."""
    rng = random.Random(f"{kind}:{seed}")
    seeds = make_seeds(kind, folder / "seeds")
    mutants = []
    for i in range(n):
        source = seeds[i % len(seeds)]
        path = folder / f"{i:05d}{''.join(source.suffixes)}"
        path.write_bytes(mutate(source.read_bytes(), rng, header_bias=0.6 if kind == "image" else 0.1))
        mutants.append(path)
    return mutants


# --- the child that reads -----------------------------------------------------------------------

#: what each kind's reader does with one input; a CnnfeatError (or a CLI's exit 1 with an error line) is a clear error
_CHILD = r"""
import contextlib, io, json, os, resource, shutil, signal, sys, tempfile, traceback
limit = int(sys.argv[3]) << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
kind, listing, seconds = sys.argv[1], sys.argv[2], int(sys.argv[4])
from cnnfeat.exceptions import CnnfeatError

def read(path, scratch):
    if kind == "store":
        from cnnfeat.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            out = os.path.join(scratch, "x.npz")
            codes = [main(["info", path, "--check"]), main(["export", path, "--format", "npz", "--output", out])]
        if any(c not in (0, 1) for c in codes):  # 1: an error said, or damage listed by --check
            raise RuntimeError(f"exit codes {codes}: {err.getvalue()[-300:]}")
        return "clear error" if 1 in codes else "result"
    if kind == "weights":
        from cnnfeat.weights.torch_pickle import load_state_dict
        load_state_dict(path)
    elif kind == "model":
        from cnnfeat.model_file import load_model
        load_model(path)
    elif kind == "archive":
        from cnnfeat.download import safe_extract
        safe_extract(path, os.path.join(scratch, "out"))
    elif kind == "csv":
        from cnnfeat.inputs import load_inputs
        load_inputs(path, allow_outside=False)
    elif kind == "image":
        from cnnfeat.images import ImageTransform, read_image_file
        ImageTransform(224).load(read_image_file(path)[0], path)
    return "result"

signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the alarm kills: a hang is seen by the parent
with open(listing) as f:
    paths = f.read().split("\n")
for path in paths:
    print("START", path, flush=True)
    scratch = tempfile.mkdtemp()
    signal.alarm(seconds)
    try:
        outcome = read(path, scratch)
    except CnnfeatError:
        outcome = "clear error"
    except BaseException:
        outcome = "traceback " + json.dumps(traceback.format_exc()[-600:])
    signal.alarm(0)
    shutil.rmtree(scratch, ignore_errors=True)
    print("END", outcome, flush=True)
"""


def fuzz(
    kinds: tuple[str, ...] = KINDS,
    n: int = 40,
    *,
    seed: int = 0,
    folder: Path,
    memory_gib: int = 4,
    seconds: int = 20,
) -> FuzzReport:
    """Mutate ``n`` inputs of each kind and read each in a child process; outcomes by kind."""
    report = FuzzReport()
    for kind in kinds:
        outcomes: Counter = Counter()
        pending = [str(p) for p in make_mutants(kind, folder / kind, n, seed)]
        while pending:
            listing = folder / kind / "listing.txt"
            listing.write_text("\n".join(pending))
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, kind, str(listing), str(memory_gib), str(seconds)],
                capture_output=True, text=True, cwd=ROOT, timeout=seconds * len(pending) + 120,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            finished = 0
            current = None
            for line in done.stdout.splitlines():
                if line.startswith("START "):
                    current = line[6:]
                elif line.startswith("END ") and current is not None:
                    outcome = line[4:]
                    if outcome.startswith("traceback"):
                        report.failures.append((kind, current, json.loads(outcome[10:])))
                        outcome = "traceback"
                    outcomes[outcome] += 1
                    finished += 1
                    current = None
            if current is not None:  # the child died inside this input
                what = "hang" if done.returncode == -14 else "crash"  # -14: SIGALRM, the per-input alarm
                outcomes[what] += 1
                report.failures.append((kind, current, f"{what} (exit {done.returncode}): {done.stderr[-600:]}"))
                finished += 1
            elif done.returncode != 0:
                raise RuntimeError(f"fuzz child for {kind} failed outside any input: {done.stderr[-2000:]}")
            pending = pending[finished:]
        report.outcomes[kind] = outcomes
    return report
