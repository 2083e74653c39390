"""FeatureStore: layout, fingerprints, locking, journal recovery and SIGKILL safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from cnnfeat.exceptions import StoreLockedError, StoreMismatchError
from cnnfeat.store import FEATURE_CODE_VERSION, FeatureStore, check_store, fingerprint_of
from tests.support import concurrent_writers_trial, kill_and_resume_trial

CONFIG = {"extractor": "test", "taps": ["a", "b"], "feature_code_version": FEATURE_CODE_VERSION}
DIMS = {"a": 3, "b": 2}


def _key(i: int) -> str:
    return f"{i:064x}"


def _rows(keys: list[int]) -> dict[str, np.ndarray]:
    k = np.asarray(keys, dtype=np.float32)[:, None]
    return {"a": k + np.arange(3, dtype=np.float32), "b": -k * np.ones(2, np.float32)}


def test_append_get_reopen_and_self_describing_file(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    with FeatureStore(path, CONFIG, dims=DIMS) as store:
        assert store.append([_key(i) for i in (5, 6, 7)], _rows([5, 6, 7]), ["x5", "x6", "x7"]) == 3
        assert store.append([_key(6), _key(8)], _rows([6, 8]), ["again", "x8"]) == 1  # 6 is present
        got = store.get([_key(8), _key(5)])  # journal rows are readable before compaction
        np.testing.assert_array_equal(got["a"], _rows([8, 5])["a"])
    with h5py.File(path, "r") as f:  # plain h5py, no cnnfeat needed
        assert f.attrs["n_rows"] == 4 and f.attrs["format"] == "cnnfeat.FeatureStore"
        assert f.attrs["fingerprint"] == fingerprint_of(CONFIG)
        assert json.loads(f.attrs["config"])["taps"] == ["a", "b"]
        assert "sha256" in f.attrs["description"]
        assert f["features/a"].shape == (4, 3) and f["features/a"].dtype == np.float32
        assert f["keys"][0].decode() == _key(5) and f["paths"][3].decode() == "x8"
    with FeatureStore(path, mode="r") as store:
        assert len(store) == 4 and _key(7) in store and _key(9) not in store
        np.testing.assert_array_equal(store.get([_key(7), _key(7)])["b"], _rows([7, 7])["b"])
        with pytest.raises(KeyError, match=_key(9)):
            store.get([_key(9)])


def test_float16_storage_returns_float32(tmp_path: Path) -> None:
    with FeatureStore(tmp_path / "h.h5", CONFIG, dims=DIMS, dtype="float16") as store:
        store.append([_key(1)], _rows([1]), ["p"])
    with FeatureStore(tmp_path / "h.h5", mode="r") as store:
        assert store.dtype == np.float16
        assert store.get([_key(1)])["a"].dtype == np.float32


def test_other_configuration_is_refused_never_mixed(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    FeatureStore(path, CONFIG, dims=DIMS).close()
    other = dict(CONFIG, pooling="max")
    with pytest.raises(StoreMismatchError, match="differs in: pooling"):
        FeatureStore(path, other, dims=DIMS)


def test_incompatible_feature_code_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    FeatureStore(path, CONFIG, dims=DIMS).close()
    with h5py.File(path, "r+") as f:  # as an older cnnfeat would have written it
        f.attrs["config"] = json.dumps(dict(CONFIG, feature_code_version=0))
    with pytest.raises(StoreMismatchError, match="feature code version 0"):
        FeatureStore(path, mode="r")


def test_not_a_store(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(StoreMismatchError, match="not a cnnfeat feature store"):
        FeatureStore(foreign, CONFIG, dims=DIMS)


def test_second_writer_is_refused_with_the_lock_named(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    with FeatureStore(path, CONFIG, dims=DIMS):
        with pytest.raises(StoreLockedError, match=r"f\.h5\.lock.*pid"):
            FeatureStore(path, CONFIG, dims=DIMS)
        with FeatureStore(path, mode="r") as reader:  # readers need no lock
            assert len(reader) == 0
    FeatureStore(path, CONFIG, dims=DIMS).close()  # released on close


def _child(code: str, tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    child = _child(
        f"""
        import os
        from cnnfeat.store import FeatureStore
        store = FeatureStore({str(path)!r}, {CONFIG!r}, dims={DIMS!r})
        store.append([{_key(1)!r}], {{"a": [[1, 2, 3]], "b": [[4, 5]]}}, ["p"])
        os._exit(0)  # dies holding the lock, without closing anything
        """,
        tmp_path,
    )
    assert child.wait(60) == 0, child.stderr.read()
    assert (tmp_path / "f.h5.lock").exists()
    with FeatureStore(path, CONFIG, dims=DIMS) as store:  # not refused: the holder is dead
        np.testing.assert_array_equal(store.get([_key(1)])["b"], [[4, 5]])


def test_concurrent_writers_never_share_the_lock_and_lose_no_committed_row(tmp_path: Path) -> None:
    # issue 27, finding 1: the lock file was unlinked after the flock was dropped, so a process could lock the old,
    # unlinked inode while another locked a new file, and one writer's merge then overwrote the other's rows
    trial = concurrent_writers_trial(tmp_path / "f.h5", writers=4, appends=40)
    assert trial["errors"] == []
    assert len(trial["committed"]) == 4 * 40 * 5 and trial["refused"] > 0  # they did contend
    assert set(trial["committed"]) == trial["found"]


def test_torn_journal_tail_is_dropped_and_complete_records_kept(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    store = FeatureStore(path, CONFIG, dims=DIMS)
    store.append([_key(1), _key(2)], _rows([1, 2]), ["p1", "p2"])
    store.append([_key(3)], _rows([3]), ["p3"])
    journal = tmp_path / "f.h5.journal"
    size = journal.stat().st_size
    store.close(compact=False)  # as a crash: nothing merged, the lock released
    with open(journal, "r+b") as f:  # the last record was cut short mid-write
        f.truncate(size - 7)
    with FeatureStore(path, CONFIG, dims=DIMS) as again:
        assert sorted(again.keys()) == [_key(1), _key(2)]
    with h5py.File(path) as f:
        assert f.attrs["n_rows"] == 2
    assert not journal.exists()


def test_write_error_keeps_committed_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing merge (e.g. a full disk) is a clear error; the committed rows stay recoverable."""
    path = tmp_path / "f.h5"
    store = FeatureStore(path, CONFIG, dims=DIMS)
    store.append([_key(1)], _rows([1]), ["p1"])

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cnnfeat.store.feature_store.shutil.copyfile", disk_full)
    from cnnfeat.exceptions import StoreError

    with pytest.raises(StoreError, match=r"No space left on device.*kept in"):
        store.close()
    monkeypatch.undo()
    with FeatureStore(path, CONFIG, dims=DIMS) as again:
        np.testing.assert_array_equal(again.get([_key(1)])["a"], _rows([1])["a"])


@pytest.mark.parametrize("trial", range(int(os.environ.get("CNNFEAT_KILL_TRIALS", "6"))))
@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path: Path, trial: int) -> None:
    """Kill a writer at a random moment (appends and merges both run), then resume and audit every row."""
    result = kill_and_resume_trial(tmp_path, seed=trial)
    assert result.committed_before_kill > 0
    assert (result.lost, result.duplicated, result.recomputed, result.wrong_values) == (0, 0, 0, 0)
    assert not list(tmp_path.glob(".trial*.h5.*.tmp")), "a merge cut short left its temporary file behind"


FULL_DISK_CHILD = """
import resource, signal, sys
import numpy as np
from cnnfeat.exceptions import StoreError
from cnnfeat.store import FeatureStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
committed = 0
try:
    store = FeatureStore(sys.argv[1], {config!r}, dims={{"a": 300, "b": 2}}, durable=False)
    for i in range(1000):
        store.append([f"{{i:064x}}"], {{"a": np.full((1, 300), i, np.float32), "b": np.zeros((1, 2), np.float32)}}, ["p"])
        committed += 1
except StoreError as exc:
    print("ERROR", committed, exc, flush=True)
    try:
        store.close()
    except StoreError as exc2:  # merging needs room too
        print("CLOSE", exc2, flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_real_write_error_is_clear_and_keeps_committed_rows(tmp_path: Path) -> None:
    config = dict(CONFIG, taps=["a", "b"])
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK_CHILD.format(config=config))
    path = tmp_path / "full.h5"
    result = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120)
    line = next(x for x in result.stdout.splitlines() if x.startswith("ERROR"))
    committed = int(line.split()[1])
    assert committed > 10 and "File too large" in line and "rows committed before are kept" in line
    with FeatureStore(path, config, dims={"a": 300, "b": 2}) as store:  # no limit now: recovers
        assert len(store) == committed
        rows = store.get([f"{i:064x}" for i in range(committed)])["a"][:, 0]
    np.testing.assert_array_equal(rows, np.arange(committed, dtype=np.float32))


@pytest.mark.parametrize("trial", range(2))
def test_death_in_the_middle_of_writing_the_hdf5_file(tmp_path: Path, trial: int) -> None:
    """The writer dies right after writing feature rows into the new HDF5 copy: the old file still serves."""
    result = kill_and_resume_trial(tmp_path, seed=trial, in_merge=True)
    assert result.killed_during_merge
    assert (result.lost, result.duplicated, result.recomputed, result.wrong_values) == (0, 0, 0, 0)


def test_a_path_longer_than_the_column_holds_widens_it_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    long = "d/" * 400 + "deep.jpg"  # 808 bytes: wider than the column's first width
    with FeatureStore(path, CONFIG, dims=DIMS) as store:
        store.append([_key(1)], _rows([1]), ["short.jpg"])
    with FeatureStore(path, CONFIG, dims=DIMS) as store:
        store.append([_key(2), _key(3)], _rows([2, 3]), [long, "café.jpg"])
    with FeatureStore(path, mode="r") as store:
        assert store.paths_of([_key(1), _key(2), _key(3)]) == ["short.jpg", long, "café.jpg"]
    with h5py.File(path) as f:
        assert f["paths"].dtype.itemsize >= len(long) and f["paths"].fletcher32
    assert check_store(path) == {}
