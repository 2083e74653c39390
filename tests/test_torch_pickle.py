"""The torch-free state-dict reader: real weights load, crafted pickles are refused."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnfeat.exceptions import UnsafePickleError, WeightsError
from cnnfeat.weights.efficientnet_lite import packaged_weights_path
from cnnfeat.weights.torch_pickle import load_state_dict
from tests.fuzzing import pickle_int, torch_checkpoint
from tests.support import make_unsafe_pickles

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def test_reads_packaged_efficientnet_lite0() -> None:
    state = load_state_dict(packaged_weights_path("efficientnet_lite0"))
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    # real trained weights: BN variances are non-negative and varied (a few channels are dead: 0)
    var = state["_bn0.running_var"]
    assert (var >= 0).all() and var.std() > 1 and (var > 0).mean() > 0.8


def test_crafted_pickles_are_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cases = make_unsafe_pickles(tmp_path, marker)
    assert len(cases) >= 4
    for kind, bad in cases.items():
        with pytest.raises(UnsafePickleError, match="refused"):
            load_state_dict(bad)
        assert not marker.exists(), kind


def test_truncated_and_non_pickle_files_are_clear_errors(tmp_path: Path) -> None:
    real = packaged_weights_path("efficientnet_lite0").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real[: len(real) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_state_dict(cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"<html>404</html>")
    with pytest.raises(WeightsError, match=r"junk\.pth"):
        load_state_dict(junk)
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict(tmp_path / "missing.pth")


def test_bad_magic_number(tmp_path: Path) -> None:
    f = tmp_path / "magic.pth"
    f.write_bytes(pickle.dumps(12345, 2) + pickle.dumps(1001, 2))
    with pytest.raises(WeightsError, match="magic"):
        load_state_dict(f)


def test_zip_layout_is_read(tmp_path: Path) -> None:
    """A hand-made PyTorch zip checkpoint (the >= 1.6 layout) with one strided tensor."""
    values = np.arange(12, dtype=np.float32)

    class Storage:
        pass

    class Rebuild:
        pass

    # write the pickle by hand: GLOBAL opcodes name torch classes that need not exist here
    buf = io.BytesIO()
    buf.write(b"\x80\x02")
    buf.write(b"ccollections\nOrderedDict\n)R")  # od = OrderedDict()
    buf.write(b"(")  # MARK for SETITEMS
    buf.write(b"X" + struct.pack("<I", 1) + b"w")
    buf.write(b"ctorch._utils\n_rebuild_tensor_v2\n")
    buf.write(b"(")  # args tuple
    buf.write(b"(X" + struct.pack("<I", 7) + b"storage" + b"ctorch\nFloatStorage\n")
    buf.write(b"X" + struct.pack("<I", 1) + b"0" + b"X" + struct.pack("<I", 3) + b"cpu" + b"K\x0ctQ")
    buf.write(b"K\x00")  # storage offset
    buf.write(b"K\x03K\x04\x86")  # size (3, 4)
    buf.write(b"K\x01K\x03\x86")  # stride (1, 3): a transposed view
    buf.write(b"\x89ccollections\nOrderedDict\n)Rt")  # requires_grad, hooks; end args
    buf.write(b"R")  # call rebuild
    buf.write(b"u.")  # SETITEMS, STOP
    ckpt = tmp_path / "zip.pt"
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/data/0", values.tobytes())
    state = load_state_dict(ckpt)
    np.testing.assert_array_equal(state["w"], values.reshape(4, 3).T)
    del Storage, Rebuild


def _checkpoint(path: Path, values: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> Path:
    path.write_bytes(torch_checkpoint(values, offset, size, stride))
    return path


def test_a_view_outside_its_storage_is_refused_before_any_read(tmp_path: Path) -> None:
    # issue 27, finding 3: negative strides passed the bounds check, and the view read memory before the buffer
    # (size 4,000,000 segfaulted; size 256 returned 255 floats of process memory)
    one = np.ones(1, np.float32)
    for size, stride, offset in [((4_000_000,), (-1,), 0), ((256,), (-1,), 0), ((4,), (1,), -2), ((3, 2), (2,), 0)]:
        with pytest.raises(WeightsError, match=r"bad\.pt.*(overruns|not a valid view)"):
            load_state_dict(_checkpoint(tmp_path / "bad.pt", one, offset, size, stride))
    with pytest.raises(WeightsError, match="overruns"):  # overlapping strides: 10^9 elements from 4 floats
        load_state_dict(_checkpoint(tmp_path / "bad.pt", np.ones(4, np.float32), 0, (1000, 1000, 1000), (0, 0, 1)))
    good = load_state_dict(_checkpoint(tmp_path / "good.pt", np.arange(6), 0, (2, 3), (3, 1)))
    np.testing.assert_array_equal(good["w"], np.arange(6).reshape(2, 3))


def test_a_state_dict_that_contains_itself_is_a_clear_error(tmp_path: Path) -> None:
    looped: dict = {}
    looped["self"] = looped
    path = tmp_path / "loop.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(looped, 2))
    with pytest.raises(WeightsError, match=r"loop\.pt.*contains itself"):
        load_state_dict(path)


def test_a_storage_length_the_file_cannot_back_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # the legacy layout: three header pickles, the state, the storage keys, then each storage's count (int64) and bytes
    header = pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps({"little_endian": True}, 2)
    state = b"\x80\x02}X" + struct.pack("<I", 1) + b"w" + b"ctorch._utils\n_rebuild_tensor_v2\n("
    state += b"(X" + struct.pack("<I", 7) + b"storage" + b"ctorch\nFloatStorage\nX" + struct.pack("<I", 1) + b"0"
    state += b"X" + struct.pack("<I", 3) + b"cpu" + pickle_int(1) + b"tQ" + pickle_int(0)  # offset 0
    state += b"(" + pickle_int(1) + b"t(" + pickle_int(1) + b"t"  # size (1,), stride (1,)
    state += b"\x89ccollections\nOrderedDict\n)RtRs."
    keys = pickle.dumps(["0"], 2)
    path = tmp_path / "huge.pth"
    path.write_bytes(header + state + keys + struct.pack("<q", 1 << 60) + b"\x00" * 4)
    with pytest.raises(WeightsError, match=r"huge\.pth: storage 0 claims"):
        load_state_dict(path)
    path.write_bytes(header + state + keys + struct.pack("<q", 1) + np.float32(7).tobytes())
    assert load_state_dict(path)["w"].tolist() == [7.0]


def test_a_pickle_length_field_larger_than_the_file_is_a_clear_error(tmp_path: Path) -> None:
    # found by the fuzzer (tests/fuzzing.py): BINBYTES8 claiming 2^62 bytes was an OverflowError traceback, and a
    # smaller claim would have had the reader allocate it
    for claim in (1 << 62, 1 << 34):
        path = tmp_path / "claim.pth"
        path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", claim) + b"abc")
        with pytest.raises(WeightsError, match=r"claim\.pth: not a readable PyTorch state dict"):
            load_state_dict(path)
